//! The address and domain parsers. Checks: no panic; an accepted mailbox or domain, printed
//! and parsed again, gives the same value; the canonical domain is lowercase and has no
//! trailing dot.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tern_core::address::{Domain, Mailbox};

fuzz_target!(|text: &str| {
    if let Ok(mailbox) = Mailbox::parse(text) {
        let printed = mailbox.to_string();
        let again = Mailbox::parse(&printed)
            .unwrap_or_else(|e| panic!("{text:?} printed as {printed:?} does not parse: {e}"));
        assert_eq!(again, mailbox, "{text:?} printed as {printed:?}");
        check_domain(&mailbox.domain);
    }
    if let Ok(domain) = Domain::parse(text) {
        let printed = domain.to_string();
        let again = Domain::parse(&printed)
            .unwrap_or_else(|e| panic!("{text:?} printed as {printed:?} does not parse: {e}"));
        assert_eq!(again, domain, "{text:?} printed as {printed:?}");
        check_domain(&domain);
    }
});

fn check_domain(domain: &Domain) {
    if let Domain::Name(name) = domain {
        assert!(!name.ends_with('.'), "{name:?}");
        assert_eq!(name.to_lowercase(), *name);
    }
}
