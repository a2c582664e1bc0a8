//! petrel integration suites.
