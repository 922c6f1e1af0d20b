use corral_plugin::testing;

use super::*;
use crate::redact::Stream;
use crate::scan::{iban_checksum_ok, luhn};

fn all() -> Redactor {
    Redactor::default()
}

fn digits(s: &str) -> Vec<u8> {
    s.bytes().map(|b| b - b'0').collect()
}

#[test]
fn luhn_accepts_real_test_numbers_only() {
    for good in [
        "4111111111111111",
        "4012888888881881",
        "5555555555554444",
        "378282246310005",
        "6011111111111117",
        "4222222222222",
    ] {
        assert!(luhn(&digits(good)), "{good}");
    }
    for bad in ["4111111111111112", "5555555555554440", "378282246310006"] {
        assert!(!luhn(&digits(bad)), "{bad}");
    }
}

#[test]
fn mod97_accepts_real_ibans_only() {
    for good in [
        "DE89370400440532013000",
        "GB82WEST12345698765432",
        "FR1420041010050500013M02606",
        "NL91ABNA0417164300",
        "BE68539007547034",
        "CH9300762011623852957",
        "NO9386011117947",
    ] {
        assert!(iban_checksum_ok(good.as_bytes()), "{good}");
    }
    for bad in [
        "DE89370400440532013001",
        "GB82WEST12345698765433",
        "NL19ABNA0417164300",
    ] {
        assert!(!iban_checksum_ok(bad.as_bytes()), "{bad}");
    }
}

/// (text, expected with every kind on and the default mask)
const CASES: &[(&str, &str)] = &[
    // e-mail
    (
        "Write to ann.lee+news@mail.example.co.uk today.",
        "Write to [email] today.",
    ),
    ("Mail: (bob_99@example.org).", "Mail: ([email])."),
    ("mailto:x@y.io", "mailto:[email]"),
    ("..ann@example.com", "..[email]"),
    ("EMAIL: ANN@EXAMPLE.COM", "EMAIL: [email]"),
    ("a@b.c and user@localhost and @example.com and name@", "a@b.c and user@localhost and @example.com and name@"),
    ("x@-bad.com y@bad-.com z@example.c0m", "x@-bad.com y@bad-.com z@example.c0m"),
    // payment cards
    ("Card 4111 1111 1111 1111 expires", "Card [card] expires"),
    ("4012-8888-8888-1881", "[card]"),
    ("amex 378282246310005.", "amex [card]."),
    ("6011111111111117, 5555 5555 5555 4444", "[card], [card]"),
    ("Card 4111 1111 1111 1112 is wrong", "Card 4111 1111 1111 1112 is wrong"),
    ("order 41111111111111112", "order 41111111111111112"),
    ("x4111111111111111", "x4111111111111111"),
    // phone numbers
    ("Call +49 170 1234567 now", "Call [phone] now"),
    ("US (555) 123-4567 ok", "US [phone] ok"),
    ("office 030 12345678", "office [phone]"),
    ("+44 20 7946 0958", "[phone]"),
    ("+49(0)30 1234567", "[phone]"),
    ("+33.1.23.45.67.89", "[phone]"),
    ("mobile 01701234567.", "mobile [phone]."),
    ("call 555-123-4567, or", "call [phone], or"),
    // numbers that are not phone numbers
    (
        "version 1.2.3, on 2024-01-15, 1 234 567 890 people, pi 3.14159265358",
        "version 1.2.3, on 2024-01-15, 1 234 567 890 people, pi 3.14159265358",
    ),
    (
        "ip 192.168.100.200, id 1234567890, at 20240115103000, +123",
        "ip 192.168.100.200, id 1234567890, at 20240115103000, +123",
    ),
    ("555-1234 and 12345", "555-1234 and 12345"),
    // IBANs
    ("IBAN DE89 3704 0044 0532 0130 00, thanks", "IBAN [iban], thanks"),
    ("GB82WEST12345698765432", "[iban]"),
    ("fr14 2004 1010 0505 0001 3m02 606 here", "[iban] here"),
    ("NL91ABNA0417164300.", "[iban]."),
    ("DE89370400440532013001", "DE89370400440532013001"),
    ("DE89 3704 0044 0532 0130 00 12", "[iban] 12"),
    ("XX89370400440532013000", "XX89370400440532013000"),
    // numbers next to each other
    ("+49 170 1234567 4111111111111111", "[phone] [card]"),
    ("4111 1111 1111 1111 2025", "[card] 2025"),
    ("0170 1234 5678", "[phone]"),
    ("4111 1111 1111 and more", "4111 1111 1111 and more"),
    // together
    (
        "Ann (ann@example.com, +49 170 1234567) paid with 4111111111111111 from DE89370400440532013000.",
        "Ann ([email], [phone]) paid with [card] from [iban].",
    ),
    ("Nothing here: just words, 42 numbers and € signs.", "Nothing here: just words, 42 numbers and € signs."),
    ("", ""),
];

#[test]
fn masks_each_kind_and_leaves_the_rest() {
    for (text, want) in CASES {
        assert_eq!(all().redact(text), *want, "{text:?}");
    }
}

#[test]
fn kinds_switch_off_one_by_one() {
    let text = "ann@example.com +49 170 1234567 4111111111111111 DE89370400440532013000";
    let mut r = all();
    r.kinds.email = false;
    assert_eq!(r.redact(text), "ann@example.com [phone] [card] [iban]");
    r = all();
    r.kinds.phone = false;
    assert_eq!(r.redact(text), "[email] +49 170 1234567 [card] [iban]");
    r = all();
    r.kinds.card = false;
    assert_eq!(r.redact(text), "[email] [phone] 4111111111111111 [iban]");
    r = all();
    r.kinds.iban = false;
    assert_eq!(
        r.redact(text),
        "[email] [phone] [card] DE89370400440532013000"
    );
}

#[test]
fn the_mask_is_configurable() {
    let r = Redactor {
        mask: "<{kind} removed>".to_owned(),
        ..all()
    };
    assert_eq!(r.redact("to ann@example.com"), "to <email removed>");
    let r = Redactor {
        mask: "***".to_owned(),
        ..all()
    };
    assert_eq!(r.redact("4111111111111111"), "***");
}

/// Streams `chunks` as Corral does, checking the protocol on the way.
fn stream(r: &Redactor, chunks: &[&str]) -> (String, usize) {
    let mut stream = Stream::default();
    let mut out = String::new();
    let mut held = String::new();
    let mut most_held = 0;
    for chunk in chunks {
        let text = format!("{held}{chunk}");
        let (emit, hold) = stream.chunk(r, &text);
        out.push_str(&emit);
        most_held = most_held.max(hold.len());
        held = hold;
    }
    out.push_str(&stream.finish(r, &held));
    (out, most_held)
}

fn char_boundaries(text: &str) -> Vec<usize> {
    (0..=text.len())
        .filter(|&i| text.is_char_boundary(i))
        .collect()
}

#[test]
fn matches_split_at_every_boundary_are_masked() {
    let r = all();
    for (text, want) in CASES {
        for k in char_boundaries(text) {
            let (got, _) = stream(&r, &[&text[..k], &text[k..]]);
            assert_eq!(got, *want, "{text:?} split at {k}");
        }
    }
}

#[test]
fn matches_split_into_single_characters_are_masked() {
    let r = all();
    for (text, want) in CASES {
        let bounds = char_boundaries(text);
        let chunks: Vec<&str> = bounds.windows(2).map(|w| &text[w[0]..w[1]]).collect();
        let (got, _) = stream(&r, &chunks);
        assert_eq!(got, *want, "{text:?} one character at a time");
    }
}

#[test]
fn matches_in_random_chunks_are_masked() {
    let r = all();
    let text: String = CASES.iter().map(|(t, _)| *t).collect::<Vec<_>>().join("\n");
    let want = r.redact(&text);
    let bounds = char_boundaries(&text);
    // A fixed linear congruential generator: the same chunkings each run.
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    for _ in 0..300 {
        let mut chunks = Vec::new();
        let mut at = 0;
        while at < text.len() {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let step = 1 + (seed >> 33) as usize % 24;
            let next = bounds
                .iter()
                .copied()
                .find(|&b| b >= (at + step).min(text.len()))
                .unwrap_or(text.len());
            chunks.push(&text[at..next]);
            at = next;
        }
        let (got, _) = stream(&r, &chunks);
        assert_eq!(got, want);
    }
}

#[test]
fn the_stream_holds_back_only_what_could_still_match() {
    let r = all();
    let mut stream = Stream::default();
    let (emit, hold) = stream.chunk(&r, "The answer is 42 and the text goes on, ");
    assert_eq!(
        (emit.as_str(), hold.as_str()),
        ("The answer is 42 and the text goes on, ", "")
    );
    let (emit, hold) = stream.chunk(&r, "write to ann@exam");
    assert_eq!((emit.as_str(), hold.as_str()), ("write to ", "ann@exam"));
    let (emit, hold) = stream.chunk(&r, "ann@example.com or call +49 170");
    assert_eq!(
        (emit.as_str(), hold.as_str()),
        ("[email] or call ", "+49 170")
    );
    assert_eq!(stream.finish(&r, "+49 170 1234567"), "[phone]");
}

#[test]
fn holding_back_is_bounded() {
    let r = all();
    let text = "12 34 56 78 90 ".repeat(400) + &"a.".repeat(2000);
    let chunks: Vec<&str> = text
        .as_bytes()
        .chunks(7)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    let (got, most_held) = stream(&r, &chunks);
    assert!(got == r.redact(&text), "streaming masked differently");
    assert!(most_held <= 520, "held {most_held} bytes");
}

#[test]
fn multibyte_text_streams_intact() {
    let r = all();
    let text = "Grüße an Zoë — schreib an zoë@example.de? Nein: zoe@example.de 🙂";
    let want = "Grüße an Zoë — schreib an zoë@example.de? Nein: [email] 🙂";
    assert_eq!(r.redact(text), want);
    for k in char_boundaries(text) {
        assert_eq!(
            stream(&r, &[&text[..k], &text[k..]]).0,
            want,
            "split at {k}"
        );
    }
}

// The hooks, through corral-plugin's stand-in host.

fn setup() {
    testing::reset();
    testing::grant(&["config"]);
    fresh_instance();
}

#[test]
fn before_prompt_masks_messages_and_the_system_prompt() {
    setup();
    let mut prompt = testing::prompt(vec![
        Message::user("I am ann@example.com"),
        Message::assistant("Noted."),
        Message::user("Card 4111 1111 1111 1111"),
    ]);
    prompt.system_prompt = Some("Support line +49 30 1234567".to_owned());
    let decision = testing::before_prompt::<PiiRedact>(&testing::context("ann"), &prompt);
    let Decision::Modify(change) = decision else {
        panic!("expected a modification, got {decision:?}");
    };
    let messages = change.messages.expect("the messages change");
    let contents: Vec<&str> = messages.iter().map(|m| m.content.as_str()).collect();
    assert_eq!(contents, ["I am [email]", "Noted.", "Card [card]"]);
    let roles: Vec<&str> = messages.iter().map(|m| m.role.as_str()).collect();
    assert_eq!(roles, ["user", "assistant", "user"]);
    assert_eq!(
        change.system_prompt.as_deref(),
        Some("Support line [phone]")
    );
}

#[test]
fn before_prompt_without_personal_data_continues() {
    setup();
    let mut prompt = testing::prompt(vec![Message::user("What is 2 + 2?")]);
    prompt.system_prompt = Some("Be brief.".to_owned());
    let decision = testing::before_prompt::<PiiRedact>(&testing::context("ann"), &prompt);
    assert_eq!(decision, Decision::Continue);
}

#[test]
fn only_the_system_prompt_changes_when_only_it_has_data() {
    setup();
    let mut prompt = testing::prompt(vec![Message::user("Hello")]);
    prompt.system_prompt = Some("Escalate to ops@example.com".to_owned());
    let decision = testing::before_prompt::<PiiRedact>(&testing::context("ann"), &prompt);
    let Decision::Modify(change) = decision else {
        panic!("expected a modification, got {decision:?}");
    };
    assert!(change.messages.is_none());
    assert_eq!(change.system_prompt.as_deref(), Some("Escalate to [email]"));
}

#[test]
fn settings_come_from_the_configuration() {
    setup();
    testing::set_config("email", serde_json::json!(false));
    testing::set_config("mask", serde_json::json!("█"));
    let run = testing::stream::<PiiRedact>(
        &testing::context("ann"),
        &["ann@exam", "ple.com, 4111 1111 ", "1111 1111"],
    );
    assert_eq!(run.text, "ann@example.com, █");
}

#[test]
fn the_stream_hook_masks_across_chunks() {
    setup();
    let run = testing::stream::<PiiRedact>(
        &testing::context("ann"),
        &[
            "Your IBAN is DE89 3704 00",
            "44 0532 0130 00 and your e-mail ann",
            "@example.com.",
        ],
    );
    assert_eq!(run.text, "Your IBAN is [iban] and your e-mail [email].");
    assert_eq!(run.emitted[0], "Your IBAN is ");
}
