//! Recipient restrictions (SPEC.md section 2), evaluated at RCPT TO.

use std::fmt;
use std::str::FromStr;

/// One entry of a listener's `restrictions` list. The first decisive entry wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Restriction {
    /// Permit if the client address is in `trusted_networks`.
    PermitMynetworks,
    /// Permit if the session authenticated.
    PermitSaslAuthenticated,
    /// 504 5.5.2 if the recipient domain is not fully qualified.
    RejectNonFqdnRecipient,
    /// 450 4.1.2 / 550 5.1.2 if the domain is neither local nor resolvable.
    RejectUnknownRecipientDomain,
    /// 554 5.7.1 unless the domain is local.
    RejectUnauthDestination,
    /// 550 5.1.1 for a local domain with no such account.
    RejectUnverifiedRecipient,
    /// 553 5.7.1 if the authenticated user does not own the MAIL FROM address.
    RejectSenderLoginMismatch,
    /// Permit unconditionally.
    Permit,
    /// Reject unconditionally (554 5.7.1).
    Reject,
}

impl Restriction {
    /// Every restriction, in the order the docs list them.
    pub const ALL: [Restriction; 9] = [
        Restriction::PermitMynetworks,
        Restriction::PermitSaslAuthenticated,
        Restriction::RejectNonFqdnRecipient,
        Restriction::RejectUnknownRecipientDomain,
        Restriction::RejectUnauthDestination,
        Restriction::RejectUnverifiedRecipient,
        Restriction::RejectSenderLoginMismatch,
        Restriction::Permit,
        Restriction::Reject,
    ];

    /// The name used in the config file.
    pub fn name(self) -> &'static str {
        match self {
            Restriction::PermitMynetworks => "permit_mynetworks",
            Restriction::PermitSaslAuthenticated => "permit_sasl_authenticated",
            Restriction::RejectNonFqdnRecipient => "reject_non_fqdn_recipient",
            Restriction::RejectUnknownRecipientDomain => "reject_unknown_recipient_domain",
            Restriction::RejectUnauthDestination => "reject_unauth_destination",
            Restriction::RejectUnverifiedRecipient => "reject_unverified_recipient",
            Restriction::RejectSenderLoginMismatch => "reject_sender_login_mismatch",
            Restriction::Permit => "permit",
            Restriction::Reject => "reject",
        }
    }
}

/// A restriction name that tern does not know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownRestriction(pub String);

impl fmt::Display for UnknownRestriction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown restriction `{}`", self.0)
    }
}

impl std::error::Error for UnknownRestriction {}

impl FromStr for Restriction {
    type Err = UnknownRestriction;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Restriction::ALL
            .into_iter()
            .find(|r| r.name() == s)
            .ok_or_else(|| UnknownRestriction(s.to_owned()))
    }
}

impl fmt::Display for Restriction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
