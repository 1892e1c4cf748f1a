//! MAIL and RCPT lines built from structured, arbitrary parameters, through the command
//! parser. Checks: no panic; keywords and verbs are case-insensitive (RFC 5321 section 2.4),
//! so the same line with them in another case parses to the same result; a keyword given
//! twice is refused.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use tern_core::command::{self, Command};

#[derive(Debug, Arbitrary)]
struct Line {
    rcpt: bool,
    path: Path,
    params: Vec<Param>,
    /// Blanks between the parts: a space, or a tab, or two.
    blanks: u8,
}

#[derive(Debug, Arbitrary)]
enum Path {
    Null,
    Plain,
    Utf8,
    Literal,
    Postmaster,
    Routed,
    Quoted,
    Any(String),
}

#[derive(Debug, Arbitrary)]
struct Param {
    key: Key,
    value: Option<Value>,
}

#[derive(Debug, Arbitrary)]
enum Key {
    Size,
    Body,
    Smtputf8,
    Ret,
    Envid,
    Auth,
    Notify,
    Orcpt,
    Any(String),
}

#[derive(Debug, Arbitrary)]
enum Value {
    Number(u64),
    Known(u8),
    Xtext(Vec<u8>),
    Any(String),
}

const KNOWN: [&str; 12] = [
    "8BITMIME",
    "7BIT",
    "BINARYMIME",
    "FULL",
    "HDRS",
    "NEVER",
    "SUCCESS,FAILURE",
    "DELAY",
    "rfc822;bob@example.net",
    "utf-8;b+2Bob@example.net",
    "<>",
    "a+2Bb",
];

fuzz_target!(|line: Line| {
    let (text, keys) = render(&line);
    let result = command::parse(text.as_bytes());

    let swapped = swap_keyword_case(&text, &keys);
    assert_eq!(
        command::parse(swapped.as_bytes()),
        result,
        "{text:?} vs {swapped:?}"
    );

    // Only the known keywords count: an arbitrary one may be empty or not a word at all.
    let known: Vec<&String> = line
        .params
        .iter()
        .take(8)
        .zip(&keys)
        .filter(|(p, _)| !matches!(p.key, Key::Any(_)))
        .map(|(_, k)| k)
        .collect();
    let duplicate = known
        .iter()
        .enumerate()
        .any(|(i, k)| known[..i].contains(k));
    if duplicate {
        assert!(
            !matches!(result, Ok(Command::Mail(..) | Command::Rcpt(..))),
            "{text:?} has a keyword twice: {result:?}"
        );
    }
});

/// The line, and the keywords as written.
fn render(line: &Line) -> (String, Vec<String>) {
    let blank = match line.blanks % 3 {
        0 => " ",
        1 => "\t",
        _ => "  ",
    };
    let path = match &line.path {
        Path::Null => "<>".to_owned(),
        Path::Plain => "<bob@example.net>".to_owned(),
        Path::Utf8 => "<jö@exämple.net>".to_owned(),
        Path::Literal => "<a@[IPv6:2001:db8::1]>".to_owned(),
        Path::Postmaster => "<Postmaster>".to_owned(),
        Path::Routed => "<@relay.example:bob@example.net>".to_owned(),
        Path::Quoted => "<\"a b\\\"c\"@example.net>".to_owned(),
        Path::Any(s) => s.clone(),
    };
    let mut text = if line.rcpt {
        format!("RCPT TO:{path}")
    } else {
        format!("MAIL FROM:{path}")
    };
    let mut keys = Vec::new();
    for param in line.params.iter().take(8) {
        let key = match &param.key {
            Key::Size => "SIZE",
            Key::Body => "BODY",
            Key::Smtputf8 => "SMTPUTF8",
            Key::Ret => "RET",
            Key::Envid => "ENVID",
            Key::Auth => "AUTH",
            Key::Notify => "NOTIFY",
            Key::Orcpt => "ORCPT",
            Key::Any(s) => s.as_str(),
        };
        text.push_str(blank);
        text.push_str(key);
        keys.push(key.to_owned());
        if let Some(value) = &param.value {
            text.push('=');
            match value {
                Value::Number(n) => text.push_str(&n.to_string()),
                Value::Known(i) => text.push_str(KNOWN[usize::from(*i) % KNOWN.len()]),
                Value::Xtext(bytes) => {
                    for &b in bytes {
                        if b.is_ascii_graphic() && b != b'+' && b != b'=' {
                            text.push(char::from(b));
                        } else {
                            text.push_str(&format!("+{b:02X}"));
                        }
                    }
                }
                Value::Any(s) => text.push_str(s),
            }
        }
    }
    (text, keys)
}

/// The same line with the verb and every keyword in another case.
fn swap_keyword_case(text: &str, keys: &[String]) -> String {
    let mut out = String::new();
    let (verb, rest) = text.split_at(4);
    out.push_str(&verb.to_ascii_lowercase());
    let mut rest = rest.to_owned();
    for key in keys {
        if key.is_empty() || !key.is_ascii() {
            continue;
        }
        // Only keywords that stand as a whole word before `=` or a blank are swapped.
        for sep in [" ", "\t"] {
            for end in ["=", " ", "\t", ""] {
                let from = format!("{sep}{key}{end}");
                if end.is_empty() && !rest.ends_with(&from) {
                    continue;
                }
                let to = format!("{sep}{}{end}", key.to_ascii_lowercase());
                rest = rest.replace(&from, &to);
            }
        }
    }
    out.push_str(&rest);
    out
}
