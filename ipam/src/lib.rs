//! petrel's IP address management: pools of pod addresses cut into per-node
//! blocks, stored in etcd or an embedded store. Built by the IPAM issue.
