//! What petrel knows of each path attribute type, one table row per type:
//! its code, its name, the Optional and Transitive bits it must carry, what
//! RFC 7606 calls for when it is malformed or repeated, and when an UPDATE
//! must carry it. The decoder, the encoder and the logs read these rows;
//! none of them names a type code to decide how to treat it.
//!
//! A type without a row is unrecognized: kept as a [`super::RawAttribute`]
//! if optional, a session reset if well-known (RFC 4271 §6.3).

use super::{Action, FLAG_OPTIONAL, FLAG_TRANSITIVE};

/// The category of a type (RFC 4271 §5): which Optional and Transitive bits
/// it must carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Category {
    WellKnown,
    OptionalTransitive,
    OptionalNonTransitive,
    /// A type petrel knows by name only: its flags and value are not
    /// checked, and it travels as a [`super::RawAttribute`] like an
    /// unrecognized one.
    Unchecked,
}

impl Category {
    /// The Optional and Transitive bits the type must carry; `None` when
    /// they are not checked.
    pub const fn flags(self) -> Option<u8> {
        match self {
            Category::WellKnown => Some(FLAG_TRANSITIVE),
            Category::OptionalTransitive => Some(FLAG_OPTIONAL | FLAG_TRANSITIVE),
            Category::OptionalNonTransitive => Some(FLAG_OPTIONAL),
            Category::Unchecked => None,
        }
    }
}

/// When an UPDATE that announces routes must carry the type (RFC 4271 §5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Required {
    Never,
    Always,
    /// Only for routes in the UPDATE's own NLRI field (RFC 4760 §3).
    WithIpv4Nlri,
}

/// One row of the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AttrType {
    pub code: u8,
    /// The name for logs (the IANA registry's).
    pub name: &'static str,
    pub category: Category,
    /// What a malformed instance calls for (RFC 7606 §2's approaches): a
    /// value that fails the type's checks, flags that conflict with the
    /// category (RFC 7606 §3 (c)), an overrun (RFC 7606 §4). An
    /// [`Category::Unchecked`] type is never found malformed.
    pub malformed: Action,
    /// What a second instance in one UPDATE calls for (RFC 7606 §3 (g)).
    pub repeated: Action,
    pub required: Required,
}

macro_rules! attr_types {
    ($(
        $(#[$doc:meta])*
        $konst:ident = $code:literal, $name:literal, $category:ident, $malformed:ident,
        $repeated:ident, $required:ident;
    )*) => {
        $(
            $(#[$doc])*
            pub const $konst: u8 = $code;
        )*

        /// Every type petrel knows, in type-code order.
        pub const TYPES: &[AttrType] = &[$(AttrType {
            code: $konst,
            name: $name,
            category: Category::$category,
            malformed: Action::$malformed,
            repeated: Action::$repeated,
            required: Required::$required,
        }),*];
    };
}

// Unchecked rows: `malformed` never applies; they are repeated like any
// attribute.
attr_types! {
    //                         name                  category               malformed         repeated          required
    /// RFC 4271 §5.1.1; malformed: RFC 7606 §7.1.
    ORIGIN = 1,               "ORIGIN",             WellKnown,             TreatAsWithdraw,  AttributeDiscard, Always;
    /// RFC 4271 §5.1.2; malformed: RFC 7606 §7.2.
    AS_PATH = 2,              "AS_PATH",            WellKnown,             TreatAsWithdraw,  AttributeDiscard, Always;
    /// RFC 4271 §5.1.3; malformed: RFC 7606 §7.3.
    NEXT_HOP = 3,             "NEXT_HOP",           WellKnown,             TreatAsWithdraw,  AttributeDiscard, WithIpv4Nlri;
    /// RFC 4271 §5.1.4; malformed: RFC 7606 §7.4.
    MULTI_EXIT_DISC = 4,      "MULTI_EXIT_DISC",    OptionalNonTransitive, TreatAsWithdraw,  AttributeDiscard, Never;
    /// RFC 4271 §5.1.5; malformed: RFC 7606 §7.5.
    LOCAL_PREF = 5,           "LOCAL_PREF",         WellKnown,             TreatAsWithdraw,  AttributeDiscard, Never;
    /// RFC 4271 §5.1.6; malformed: RFC 7606 §7.6.
    ATOMIC_AGGREGATE = 6,     "ATOMIC_AGGREGATE",   WellKnown,             AttributeDiscard, AttributeDiscard, Never;
    /// RFC 4271 §5.1.7; malformed: RFC 7606 §7.7.
    AGGREGATOR = 7,           "AGGREGATOR",         OptionalTransitive,    AttributeDiscard, AttributeDiscard, Never;
    /// RFC 1997; malformed: RFC 7606 §7.8.
    COMMUNITIES = 8,          "COMMUNITIES",        OptionalTransitive,    TreatAsWithdraw,  AttributeDiscard, Never;
    /// RFC 4456 §8; malformed: RFC 7606 §7.9.
    ORIGINATOR_ID = 9,        "ORIGINATOR_ID",      OptionalNonTransitive, TreatAsWithdraw,  AttributeDiscard, Never;
    /// RFC 4456 §8; malformed: RFC 7606 §7.10.
    CLUSTER_LIST = 10,        "CLUSTER_LIST",       OptionalNonTransitive, TreatAsWithdraw,  AttributeDiscard, Never;
    /// RFC 4760 §3; malformed: RFC 7606 §7.11 (petrel does not implement
    /// the AFI/SAFI-disable alternative); repeated: RFC 7606 §3 (g).
    MP_REACH_NLRI = 14,       "MP_REACH_NLRI",      OptionalNonTransitive, SessionReset,     SessionReset,     Never;
    /// RFC 4760 §4; malformed: RFC 7606 §7.12; repeated: RFC 7606 §3 (g).
    MP_UNREACH_NLRI = 15,     "MP_UNREACH_NLRI",    OptionalNonTransitive, SessionReset,     SessionReset,     Never;
    /// RFC 4360 §2; malformed: RFC 7606 §7.14.
    EXTENDED_COMMUNITIES = 16, "EXTENDED_COMMUNITIES", OptionalTransitive, TreatAsWithdraw,  AttributeDiscard, Never;
    /// RFC 6793 §3; malformed: RFC 6793 §6 (RFC 7606 has no entry).
    AS4_PATH = 17,            "AS4_PATH",           OptionalTransitive,    AttributeDiscard, AttributeDiscard, Never;
    /// RFC 6793 §3; malformed: RFC 6793 §6.
    AS4_AGGREGATOR = 18,      "AS4_AGGREGATOR",     OptionalTransitive,    AttributeDiscard, AttributeDiscard, Never;
    /// RFC 6514 §5.
    PMSI_TUNNEL = 22,         "PMSI_TUNNEL",        Unchecked,             TreatAsWithdraw,  AttributeDiscard, Never;
    /// RFC 9012 §2.
    TUNNEL_ENCAPSULATION = 23, "TUNNEL_ENCAPSULATION", Unchecked,          TreatAsWithdraw,  AttributeDiscard, Never;
    /// RFC 5701 §2; malformed: RFC 7606 §7.15.
    IPV6_EXT_COMMUNITIES = 25, "IPV6_ADDRESS_SPECIFIC_EXTENDED_COMMUNITY", OptionalTransitive, TreatAsWithdraw, AttributeDiscard, Never;
    /// RFC 7311 §3; malformed: RFC 7311 §3.2 (RFC 7606 has no entry).
    AIGP = 26,                "AIGP",               OptionalNonTransitive, AttributeDiscard, AttributeDiscard, Never;
    /// RFC 9552.
    BGP_LS = 29,              "BGP-LS",             Unchecked,             TreatAsWithdraw,  AttributeDiscard, Never;
    /// RFC 8092 §3; malformed: RFC 8092 §6.
    LARGE_COMMUNITY = 32,     "LARGE_COMMUNITY",    OptionalTransitive,    TreatAsWithdraw,  AttributeDiscard, Never;
    /// RFC 8205 §3.
    BGPSEC_PATH = 33,         "BGPsec_PATH",        Unchecked,             TreatAsWithdraw,  AttributeDiscard, Never;
    /// RFC 9234 §5; malformed: RFC 9234 §5.
    OTC = 35,                 "OTC",                OptionalTransitive,    TreatAsWithdraw,  AttributeDiscard, Never;
    /// RFC 8669 §3.
    PREFIX_SID = 40,          "PREFIX_SID",         Unchecked,             TreatAsWithdraw,  AttributeDiscard, Never;
    /// RFC 6368 §5; malformed: RFC 7606 §7.16.
    ATTR_SET = 128,           "ATTR_SET",           OptionalTransitive,    TreatAsWithdraw,  AttributeDiscard, Never;
}

/// Row index by type code; `NONE` for codes without a row. Built at
/// compile time, which also rejects a code listed twice.
const INDEX: [u8; 256] = {
    let mut index = [NONE; 256];
    let mut i = 0;
    while i < TYPES.len() {
        let code = TYPES[i].code as usize;
        assert!(index[code] == NONE, "a type code has two rows");
        index[code] = i as u8;
        i += 1;
    }
    index
};
const NONE: u8 = u8::MAX;

/// What the decoder applies to a type without a row: optional ones travel
/// unchecked (RFC 4271 §5), and a repeat is discarded like any other
/// (RFC 7606 §3 (g)).
pub(crate) const UNRECOGNIZED: AttrType = AttrType {
    code: 0,
    name: "unknown",
    category: Category::Unchecked,
    malformed: Action::TreatAsWithdraw,
    repeated: Action::AttributeDiscard,
    required: Required::Never,
};

impl AttrType {
    /// The row for `code`, if petrel knows the type.
    #[inline]
    pub const fn of(code: u8) -> Option<&'static AttrType> {
        let i = INDEX[code as usize];
        if i == NONE {
            None
        } else {
            Some(&TYPES[i as usize])
        }
    }

    /// The row for `code`, or [`UNRECOGNIZED`].
    #[inline]
    pub(crate) const fn rules(code: u8) -> &'static AttrType {
        match AttrType::of(code) {
            Some(t) => t,
            None => &UNRECOGNIZED,
        }
    }

    /// The flags an encoder gives the type, in const context
    /// (`const { AttrType::flags_of(ORIGIN) }`): a code without checked
    /// flags fails the build.
    pub const fn flags_of(code: u8) -> u8 {
        match AttrType::rules(code).category.flags() {
            Some(f) => f,
            None => panic!("no flags for this type code"),
        }
    }
}

/// What the decoder asks of a type for every attribute it reads, by type
/// code: the rows' facts laid out for one load each (a lookup through
/// [`AttrType::of`] cost the decoder 7% more instructions, a copied row
/// 2%, a reference to this one 0.9%). Derived from
/// [`TYPES`] at compile time; [`UNRECOGNIZED`]'s for codes without a row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Rules {
    /// [`Category::flags`].
    pub flags: Option<u8>,
    pub category: Category,
    pub malformed: Action,
    pub repeated: Action,
}

impl Rules {
    const fn of(t: &AttrType) -> Rules {
        Rules {
            flags: t.category.flags(),
            category: t.category,
            malformed: t.malformed,
            repeated: t.repeated,
        }
    }

    #[inline]
    pub(crate) fn by_code(code: u8) -> &'static Rules {
        &RULES[code as usize]
    }
}

static RULES: [Rules; 256] = {
    let mut rules = [Rules::of(&UNRECOGNIZED); 256];
    let mut i = 0;
    while i < TYPES.len() {
        rules[TYPES[i].code as usize] = Rules::of(&TYPES[i]);
        i += 1;
    }
    rules
};

/// The rows an announcing UPDATE may have to carry, in table order.
pub(crate) const REQUIRED: [AttrType; required_count()] = {
    let mut out = [UNRECOGNIZED; required_count()];
    let (mut i, mut n) = (0, 0);
    while i < TYPES.len() {
        if !matches!(TYPES[i].required, Required::Never) {
            out[n] = TYPES[i];
            n += 1;
        }
        i += 1;
    }
    out
};

const fn required_count() -> usize {
    let (mut i, mut n) = (0, 0);
    while i < TYPES.len() {
        if !matches!(TYPES[i].required, Required::Never) {
            n += 1;
        }
        i += 1;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_in_code_order_and_found_by_code() {
        assert!(TYPES.windows(2).all(|w| w[0].code < w[1].code));
        for t in TYPES {
            assert_eq!(AttrType::of(t.code), Some(t));
        }
        assert_eq!(AttrType::of(0), None);
        assert_eq!(AttrType::of(255), None);
        assert_eq!(AttrType::rules(255).name, "unknown");
        for code in 0..=255u8 {
            assert_eq!(*Rules::by_code(code), Rules::of(AttrType::rules(code)));
        }
    }

    /// RFC 4271 §5: ORIGIN and AS_PATH in every announcement, NEXT_HOP
    /// with IPv4 NLRI (RFC 4760 §3); nothing else.
    #[test]
    fn required_rows() {
        let r: Vec<(u8, Required)> = REQUIRED.iter().map(|t| (t.code, t.required)).collect();
        assert_eq!(
            r,
            [
                (ORIGIN, Required::Always),
                (AS_PATH, Required::Always),
                (NEXT_HOP, Required::WithIpv4Nlri)
            ]
        );
    }

    /// Only the MP attributes reset the session (RFC 7606 §7.11, §7.12,
    /// §3 (g)); the rest are withdraw or discard.
    #[test]
    fn only_mp_attributes_reset() {
        let resets: Vec<u8> = TYPES
            .iter()
            .filter(|t| t.malformed == Action::SessionReset || t.repeated == Action::SessionReset)
            .map(|t| t.code)
            .collect();
        assert_eq!(resets, [MP_REACH_NLRI, MP_UNREACH_NLRI]);
    }
}
