//! A hand-written scanner for e-mail addresses, phone numbers, payment
//! card numbers (Luhn-checked) and IBANs (mod-97-checked).
//!
//! The scanner walks the text once, left to right, and tries each kind at
//! every position where one could start. A try ends in a match, in no
//! match, or, when the text ends before the try could decide, in "more
//! text needed": a stream filter holds the text back from that position
//! until the next chunk (or the end of the answer) decides it. Because a
//! try never decides on text it has not seen, streaming an answer in any
//! chunks masks exactly what masking the whole answer at once would.
//!
//! Every pattern is ASCII, so positions are byte offsets and always fall
//! on character boundaries.

/// A kind of personal data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Email,
    Phone,
    Card,
    Iban,
}

impl Kind {
    /// The kind's name, as in settings and default masks.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Email => "email",
            Kind::Phone => "phone",
            Kind::Card => "card",
            Kind::Iban => "iban",
        }
    }
}

/// One stretch of personal data: `text[start..end]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    pub start: usize,
    pub end: usize,
    pub kind: Kind,
}

/// Which kinds to look for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kinds {
    pub email: bool,
    pub phone: bool,
    pub card: bool,
    pub iban: bool,
}

impl Kinds {
    pub const ALL: Kinds = Kinds {
        email: true,
        phone: true,
        card: true,
        iban: true,
    };
}

/// What a scan found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scan {
    /// Matches in order, not overlapping.
    pub found: Vec<Found>,
    /// Where a possible match starts that the end of the text cut short
    /// (only when the text is not complete); nothing from here on was
    /// decided.
    pub pending: Option<usize>,
}

/// A try of one kind at one position: the text, the position, and
/// whether the text is complete.
type Scanner = fn(&[u8], usize, bool) -> Try;

/// The outcome of one try at one position.
enum Try {
    No,
    Match(usize),
    More,
}

/// Finds personal data in `text[from..]`. The bytes before `from` are
/// only context (what came just before); `after_match` is where the last
/// match before `from` ended (0 when none did). `complete`: the text ends
/// here; otherwise a try that reaches the end reports [`Scan::pending`].
pub fn scan(text: &[u8], from: usize, after_match: usize, kinds: Kinds, complete: bool) -> Scan {
    let mut found = Vec::new();
    let mut after_match = after_match;
    let mut i = from;
    'positions: while i < text.len() {
        let prev = if i == 0 { None } else { Some(text[i - 1]) };
        let phone_start = phone_can_start(text, i, after_match);
        let tries: [(bool, Kind, Scanner); 4] = [
            (
                kinds.email && email_can_start(text[i], prev),
                Kind::Email,
                email,
            ),
            (
                kinds.iban && iban_can_start(text[i], prev),
                Kind::Iban,
                iban,
            ),
            (
                kinds.card && text[i].is_ascii_digit() && !prev.is_some_and(is_alnum),
                Kind::Card,
                card,
            ),
            (kinds.phone && phone_start, Kind::Phone, phone),
        ];
        for (applies, kind, try_at) in tries {
            if !applies {
                continue;
            }
            match try_at(text, i, complete) {
                Try::No => {}
                Try::Match(end) => {
                    found.push(Found {
                        start: i,
                        end,
                        kind,
                    });
                    i = end;
                    after_match = end;
                    continue 'positions;
                }
                Try::More => {
                    return Scan {
                        found,
                        pending: Some(i),
                    };
                }
            }
        }
        i += 1;
    }
    Scan {
        found,
        pending: None,
    }
}

/// What to do when the text ends before a try could decide.
fn at_end(complete: bool) -> Try {
    if complete {
        Try::No
    } else {
        Try::More
    }
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_alphanumeric()
}

fn ends_word(text: &[u8], end: usize, complete: bool) -> Option<Try> {
    match text.get(end) {
        None if !complete => Some(Try::More),
        Some(&b) if is_alnum(b) => Some(Try::No),
        _ => None,
    }
}

// ---------------------------------------------------------------- e-mail

const MAX_LOCAL: usize = 64;
const MAX_DOMAIN: usize = 253;

fn is_local(b: u8) -> bool {
    is_alnum(b) || matches!(b, b'.' | b'_' | b'%' | b'+' | b'-')
}

fn is_domain(b: u8) -> bool {
    is_alnum(b) || matches!(b, b'.' | b'-')
}

fn email_can_start(b: u8, prev: Option<u8>) -> bool {
    // A dot may sit inside a local part but does not start one, so
    // "..ann@example.com" masks "ann@example.com".
    is_local(b) && b != b'.' && !prev.is_some_and(|p| is_local(p) && p != b'.')
}

fn email(text: &[u8], start: usize, complete: bool) -> Try {
    let mut at = start;
    while at < text.len() && is_local(text[at]) {
        at += 1;
        if at - start > MAX_LOCAL {
            return Try::No;
        }
    }
    if at == text.len() {
        return at_end(complete);
    }
    if text[at] != b'@' {
        return Try::No;
    }
    let domain_start = at + 1;
    let mut end = domain_start;
    while end < text.len() && is_domain(text[end]) {
        end += 1;
        if end - domain_start > MAX_DOMAIN {
            return Try::No;
        }
    }
    if end == text.len() && !complete {
        return Try::More;
    }
    // A sentence's full stop or a dash after the address is not part of it.
    while end > domain_start && matches!(text[end - 1], b'.' | b'-') {
        end -= 1;
    }
    if valid_domain(&text[domain_start..end]) {
        Try::Match(end)
    } else {
        Try::No
    }
}

fn valid_domain(domain: &[u8]) -> bool {
    let labels: Vec<&[u8]> = domain.split(|&b| b == b'.').collect();
    let labels_ok = labels.iter().all(|label| {
        !label.is_empty() && label.len() <= 63 && label[0] != b'-' && label[label.len() - 1] != b'-'
    });
    let tld = labels[labels.len() - 1];
    labels.len() >= 2 && labels_ok && tld.len() >= 2 && tld.iter().all(u8::is_ascii_alphabetic)
}

// ------------------------------------------------------------------- card

/// 13 to 19 digits, in groups separated by single spaces or dashes, that
/// pass the Luhn check. When more groups follow ("4111 1111 1111 1111
/// 2025"), the longest run of whole groups that is a card number counts.
fn card(text: &[u8], start: usize, complete: bool) -> Try {
    let mut digits = Vec::with_capacity(19);
    // The end and the digit count after each whole group.
    let mut groups: Vec<(usize, usize)> = Vec::new();
    let mut at = start;
    loop {
        while at < text.len() && text[at].is_ascii_digit() {
            if digits.len() == 19 {
                return longest_card(&digits, &groups);
            }
            digits.push(text[at] - b'0');
            at += 1;
        }
        match text.get(at) {
            None if !complete => return Try::More,
            // Digits glued to a word are no card number.
            Some(&b) if is_alnum(b) => break,
            None => {
                groups.push((at, digits.len()));
                break;
            }
            Some(b' ' | b'-') => {
                groups.push((at, digits.len()));
                match text.get(at + 1) {
                    None if !complete => return Try::More,
                    Some(next) if next.is_ascii_digit() => at += 1,
                    _ => break,
                }
            }
            Some(_) => {
                groups.push((at, digits.len()));
                break;
            }
        }
    }
    longest_card(&digits, &groups)
}

fn longest_card(digits: &[u8], groups: &[(usize, usize)]) -> Try {
    groups
        .iter()
        .rev()
        .find(|&&(_, count)| (13..=19).contains(&count) && luhn(&digits[..count]))
        .map_or(Try::No, |&(end, _)| Try::Match(end))
}

/// The Luhn checksum: from the right, every second digit doubled (minus
/// 9 when over 9); the sum must end in 0.
pub fn luhn(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            let d = u32::from(d);
            if i % 2 == 1 {
                let doubled = d * 2;
                if doubled > 9 {
                    doubled - 9
                } else {
                    doubled
                }
            } else {
                d
            }
        })
        .sum();
    sum % 10 == 0
}

// ------------------------------------------------------------------ phone

/// Whether a phone number can start at `at`: at a digit, `+` or `(` that
/// neither continues a word nor a number ("4111 1111 1111 1112" has no
/// phone number starting at its second group), unless the number before
/// ended a match (`after_match`).
fn phone_can_start(text: &[u8], at: usize, after_match: usize) -> bool {
    let b = text[at];
    if !(b.is_ascii_digit() || b == b'+' || b == b'(') {
        return false;
    }
    match at.checked_sub(1).map(|p| text[p]) {
        None => true,
        Some(prev) if is_alnum(prev) => false,
        Some(b' ' | b'-' | b'.' | b'/' | b')' | b'(' | b'+') => !at
            .checked_sub(2)
            .is_some_and(|p| p >= after_match && (text[p].is_ascii_digit() || text[p] == b')')),
        Some(_) => true,
    }
}

/// A phone number: an optional `+`, then groups of digits (one may be in
/// parentheses) separated by single spaces, dashes, dots or slashes.
/// International numbers (`+`) have 8 to 15 digits; others 10 to 15 and
/// must look like a phone number (a separator, a leading 0 or a group in
/// parentheses), so that plain long numbers, thousands, dates, decimal
/// numbers, IP addresses and card-like groups are left alone. When more
/// groups follow, the longest run of whole groups that is a phone number
/// counts.
fn phone(text: &[u8], start: usize, complete: bool) -> Try {
    let plus = text[start] == b'+';
    let mut at = start + usize::from(plus);
    let mut groups: Vec<usize> = Vec::new();
    let mut separators: Vec<u8> = Vec::new();
    let mut parenthesized = false;
    let mut digits = 0;
    let mut first_digit = None;
    let mut candidates: Vec<PhoneCandidate> = Vec::new();
    loop {
        // One group: digits, or digits in parentheses (one such group).
        let open = text.get(at) == Some(&b'(');
        if open {
            if parenthesized {
                break;
            }
            at += 1;
        }
        let group_start = at;
        while at < text.len() && text[at].is_ascii_digit() {
            at += 1;
        }
        let len = at - group_start;
        if at == text.len() && !complete {
            return Try::More;
        }
        if len == 0 || digits + len > 15 {
            break;
        }
        if open {
            if text.get(at) != Some(&b')') {
                break;
            }
            parenthesized = true;
            at += 1;
        }
        first_digit.get_or_insert(text[group_start]);
        digits += len;
        groups.push(len);
        let next = text.get(at).copied();
        // "(030)1234": a group in parentheses joins the next without a
        // separator; any other group glued to a word ends the number.
        let joined = open && next.is_some_and(|b| b.is_ascii_digit());
        if !joined && next.is_some_and(is_alnum) {
            break;
        }
        candidates.push(PhoneCandidate {
            end: at,
            groups: groups.len(),
            separators: separators.len(),
            digits,
            parenthesized,
        });
        match next {
            _ if joined => {}
            None if !complete => return Try::More,
            None => break,
            Some(sep @ (b' ' | b'-' | b'.' | b'/')) => match text.get(at + 1) {
                None if !complete => return Try::More,
                Some(&after) if after.is_ascii_digit() || (after == b'(' && !parenthesized) => {
                    separators.push(sep);
                    at += 1;
                }
                _ => break,
            },
            // "+49(0)30"
            Some(b'(') if !parenthesized => {}
            Some(_) => break,
        }
    }
    candidates
        .iter()
        .rev()
        .find(|c| {
            let (groups, separators) = (&groups[..c.groups], &separators[..c.separators]);
            if plus {
                (8..=15).contains(&c.digits)
            } else {
                (10..=15).contains(&c.digits)
                    && (!separators.is_empty() || c.parenthesized || first_digit == Some(b'0'))
                    && (c.parenthesized || !is_other_number(groups, separators, first_digit))
            }
        })
        .map_or(Try::No, |c| Try::Match(c.end))
}

/// A phone number's end after one of its whole groups.
struct PhoneCandidate {
    end: usize,
    groups: usize,
    separators: usize,
    digits: usize,
    parenthesized: bool,
}

/// Digit groups that read as something other than a phone number: an IP
/// address, a decimal number, thousands ("1 234 567 890") or card-like
/// groups of four.
fn is_other_number(groups: &[usize], separators: &[u8], first_digit: Option<u8>) -> bool {
    let all = |sep: u8| !separators.is_empty() && separators.iter().all(|&s| s == sep);
    let ip = all(b'.') && groups.len() == 4 && groups.iter().all(|&g| g <= 3);
    let decimal = separators == [b'.'];
    let thousands = groups.len() >= 3
        && (all(b' ') || all(b'.'))
        && groups[0] <= 3
        && first_digit != Some(b'0')
        && groups[1..].iter().all(|&g| g == 3);
    // "4111 1111 1111": the start of a card number, not a phone number.
    let card_like =
        groups.len() >= 3 && first_digit != Some(b'0') && groups.iter().all(|&g| g == 4);
    ip || decimal || thousands || card_like
}

// ------------------------------------------------------------------- IBAN

fn iban_can_start(b: u8, prev: Option<u8>) -> bool {
    b.is_ascii_alphabetic() && !prev.is_some_and(is_alnum)
}

/// An IBAN of a country in the IBAN registry, with its country's length,
/// written in one piece or in groups separated by single spaces, whose
/// check digits pass mod 97.
fn iban(text: &[u8], start: usize, complete: bool) -> Try {
    let Some(second) = text.get(start + 1) else {
        return at_end(complete);
    };
    if !second.is_ascii_alphabetic() {
        return Try::No;
    }
    let country = [
        text[start].to_ascii_uppercase(),
        second.to_ascii_uppercase(),
    ];
    let Some(length) = iban_length(&country) else {
        return Try::No;
    };
    let mut chars: Vec<u8> = country.to_vec();
    let mut at = start + 2;
    while chars.len() < length {
        let Some(&b) = text.get(at) else {
            return at_end(complete);
        };
        if is_alnum(b) {
            // The check digits.
            if chars.len() < 4 && !b.is_ascii_digit() {
                return Try::No;
            }
            chars.push(b.to_ascii_uppercase());
            at += 1;
        } else if b == b' ' && chars.len() >= 4 {
            match text.get(at + 1) {
                None => return at_end(complete),
                Some(&next) if is_alnum(next) => at += 1,
                Some(_) => return Try::No,
            }
        } else {
            return Try::No;
        }
    }
    if let Some(decided) = ends_word(text, at, complete) {
        return decided;
    }
    if iban_checksum_ok(&chars) {
        Try::Match(at)
    } else {
        Try::No
    }
}

/// ISO 13616: the first four characters moved to the end, letters read
/// as 10 to 35, the number mod 97 must be 1.
pub fn iban_checksum_ok(chars: &[u8]) -> bool {
    let rearranged = chars[4..].iter().chain(&chars[..4]);
    let mut rest: u32 = 0;
    for &c in rearranged {
        let value = match c {
            b'0'..=b'9' => u32::from(c - b'0'),
            b'A'..=b'Z' => u32::from(c - b'A') + 10,
            _ => return false,
        };
        rest = if value >= 10 {
            (rest * 100 + value) % 97
        } else {
            (rest * 10 + value) % 97
        };
    }
    rest == 1
}

/// The IBAN length of each country in the IBAN registry.
fn iban_length(country: &[u8; 2]) -> Option<usize> {
    const LENGTHS: &[(&[u8; 2], usize)] = &[
        (b"AD", 24),
        (b"AE", 23),
        (b"AL", 28),
        (b"AT", 20),
        (b"AZ", 28),
        (b"BA", 20),
        (b"BE", 16),
        (b"BG", 22),
        (b"BH", 22),
        (b"BI", 27),
        (b"BR", 29),
        (b"BY", 28),
        (b"CH", 21),
        (b"CR", 22),
        (b"CY", 28),
        (b"CZ", 24),
        (b"DE", 22),
        (b"DJ", 27),
        (b"DK", 18),
        (b"DO", 28),
        (b"EE", 20),
        (b"EG", 29),
        (b"ES", 24),
        (b"FI", 18),
        (b"FK", 18),
        (b"FO", 18),
        (b"FR", 27),
        (b"GB", 22),
        (b"GE", 22),
        (b"GI", 23),
        (b"GL", 18),
        (b"GR", 27),
        (b"GT", 28),
        (b"HN", 28),
        (b"HR", 21),
        (b"HU", 28),
        (b"IE", 22),
        (b"IL", 23),
        (b"IQ", 23),
        (b"IS", 26),
        (b"IT", 27),
        (b"JO", 30),
        (b"KW", 30),
        (b"KZ", 20),
        (b"LB", 28),
        (b"LC", 32),
        (b"LI", 21),
        (b"LT", 20),
        (b"LU", 20),
        (b"LV", 21),
        (b"LY", 25),
        (b"MC", 27),
        (b"MD", 24),
        (b"ME", 22),
        (b"MK", 19),
        (b"MN", 20),
        (b"MR", 27),
        (b"MT", 31),
        (b"MU", 30),
        (b"NI", 28),
        (b"NL", 18),
        (b"NO", 15),
        (b"OM", 23),
        (b"PK", 24),
        (b"PL", 28),
        (b"PS", 29),
        (b"PT", 25),
        (b"QA", 29),
        (b"RO", 24),
        (b"RS", 22),
        (b"RU", 33),
        (b"SA", 24),
        (b"SC", 31),
        (b"SD", 18),
        (b"SE", 24),
        (b"SI", 19),
        (b"SK", 24),
        (b"SM", 27),
        (b"SO", 23),
        (b"ST", 25),
        (b"SV", 28),
        (b"TL", 23),
        (b"TN", 24),
        (b"TR", 26),
        (b"UA", 29),
        (b"VA", 22),
        (b"VG", 24),
        (b"XK", 20),
        (b"YE", 30),
    ];
    LENGTHS
        .iter()
        .find(|(code, _)| *code == country)
        .map(|&(_, length)| length)
}
