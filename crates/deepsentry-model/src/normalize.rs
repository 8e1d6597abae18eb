//! Turning a raw log line into a template: the variable parts (numbers, ids, addresses, paths)
//! are masked so that every line of one kind shares one template, and the template is split
//! into tokens for the text autoencoder.
//!
//! The scanner works on bytes in one pass with no regex and no allocation beyond the output
//! string, because it runs on every line of the stream.

/// Placeholders for masked values.
pub mod mask {
    /// A number (integers, decimals, dates like `2005.06.03`, times).
    pub const NUM: &str = "<NUM>";
    /// An IPv4 address, with or without `:port` or a leading `/`.
    pub const IP: &str = "<IP>";
    /// An HDFS block id (`blk_-123`).
    pub const BLOCK: &str = "<BLK>";
    /// A UUID.
    pub const UUID: &str = "<UUID>";
    /// A hexadecimal value (`0x1f`, or a long run of hex digits such as a hash).
    pub const HEX: &str = "<HEX>";
    /// A filesystem path, a URL or a URL path (`/var/log/x`, `C:\Windows\x.dll`,
    /// `\\server\share`, `https://example.com/login`).
    pub const PATH: &str = "<PATH>";
    /// An identifier mixing letters and digits (`req-4f2a`, `part-00269`, `R02-M1-N0`).
    pub const ID: &str = "<ID>";
    /// An e-mail address (`jane.doe@example.com`), digits or not.
    pub const EMAIL: &str = "<EMAIL>";
    /// An HTTP response's status, by class: `<1XX>` to `<5XX>`, where it follows the request
    /// line of an access log (`"GET / HTTP/1.1" 503`) or a status key (`status=503`,
    /// `"status":503`, `status: 503`, `response_code=503`). The class is the statement (a
    /// server error is another event than a success); the code within it is a value.
    pub const HTTP_STATUS: [&str; 5] = ["<1XX>", "<2XX>", "<3XX>", "<4XX>", "<5XX>"];
}

/// Whether `token` is an HTTP version (`HTTP/1.1`, `HTTP/2`), which ends a request line.
fn is_http_version(token: &str) -> bool {
    token.strip_prefix("HTTP/").is_some_and(|version| {
        version.as_bytes().first().is_some_and(u8::is_ascii_digit)
            && version.bytes().all(|b| b.is_ascii_digit() || b == b'.')
    })
}

/// Whether `token` is a key whose value is an HTTP status (`status`, `status_code`,
/// `http_status`, `response_code`).
fn is_status_key(token: &str) -> bool {
    token.len() <= 15
        && [
            "status",
            "status_code",
            "statuscode",
            "http_status",
            "response_code",
            "responsecode",
            "response_status",
        ]
        .iter()
        .any(|key| token.eq_ignore_ascii_case(key))
}

/// The placeholder of an HTTP status code (`503` is `<5XX>`), if `token` is one.
fn http_status(token: &str) -> Option<&'static str> {
    match token.as_bytes() {
        [class @ b'1'..=b'5', b'0'..=b'9', b'0'..=b'9'] => {
            Some(mask::HTTP_STATUS[usize::from(class - b'1')])
        }
        _ => None,
    }
}

/// Characters that separate tokens (besides whitespace). `:`, `.`, `/`, `-`, `_` stay inside
/// tokens so that addresses, paths and ids are seen whole.
fn is_separator(b: u8) -> bool {
    SEPARATORS[usize::from(b)]
}

/// [`is_separator`] as a table: the scanner asks for every byte of every line.
static SEPARATORS: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = (b as u8).is_ascii_whitespace()
            || matches!(
                b as u8,
                b',' | b';'
                    | b'('
                    | b')'
                    | b'['
                    | b']'
                    | b'{'
                    | b'}'
                    | b'"'
                    | b'\''
                    | b'='
                    | b'<'
                    | b'>'
                    | b'|'
            );
        b += 1;
    }
    table
};

fn is_ipv4(s: &[u8]) -> bool {
    let s = s.strip_prefix(b"/").unwrap_or(s);
    let addr = match s.iter().position(|&b| b == b':') {
        Some(colon) => {
            let port = &s[colon + 1..];
            if port.is_empty() || !port.iter().all(u8::is_ascii_digit) {
                return false;
            }
            &s[..colon]
        }
        None => s,
    };
    let mut parts = 0;
    for part in addr.split(|&b| b == b'.') {
        if part.is_empty() || part.len() > 3 || !part.iter().all(u8::is_ascii_digit) {
            return false;
        }
        parts += 1;
    }
    parts == 4
}

fn is_uuid(s: &[u8]) -> bool {
    s.len() == 36
        && s.iter().enumerate().all(|(i, &b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

fn is_number(s: &[u8]) -> bool {
    let s = s
        .strip_prefix(b"-")
        .or_else(|| s.strip_prefix(b"+"))
        .unwrap_or(s);
    !s.is_empty()
        && s[0].is_ascii_digit()
        && s.iter()
            .all(|&b| b.is_ascii_digit() || matches!(b, b'.' | b':' | b'-' | b'_' | b','))
}

fn is_hex(s: &[u8]) -> bool {
    if let Some(rest) = s.strip_prefix(b"0x").or_else(|| s.strip_prefix(b"0X")) {
        return !rest.is_empty() && rest.iter().all(u8::is_ascii_hexdigit);
    }
    s.len() >= 8
        && s.iter().all(u8::is_ascii_hexdigit)
        && s.iter().any(u8::is_ascii_digit)
        && s.iter().any(|b| b.is_ascii_alphabetic())
}

fn is_block(s: &[u8]) -> bool {
    let Some(rest) = s.strip_prefix(b"blk_") else {
        return false;
    };
    let rest = rest.strip_prefix(b"-").unwrap_or(rest);
    !rest.is_empty() && rest.iter().all(u8::is_ascii_digit)
}

/// A Windows path: a drive's (`C:\Windows\Logs`) or a share's (`\\server\builds`). Escapes
/// such as `\042` (a quote, in octal) are not.
fn is_windows_path(s: &[u8]) -> bool {
    s.len() > 3
        && match s {
            [drive, b':', b'\\', ..] => drive.is_ascii_alphabetic(),
            [b'\\', b'\\', host, ..] => host.is_ascii_alphanumeric(),
            _ => false,
        }
}

/// An e-mail address: a local part, `@`, and a domain of dot-separated labels ending in a
/// name of letters (`jane.doe+shop@mail.example.com`). `user@host` without a dot, a Java
/// object's `Pool@6a2b1ed4` and an annotation's `@774` are not.
fn is_email(token: &[u8]) -> bool {
    let Some(at) = token.iter().position(|&b| b == b'@') else {
        return false;
    };
    let (local, domain) = (&token[..at], &token[at + 1..]);
    let local_ok = !local.is_empty()
        && local
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'%' | b'+' | b'-'));
    let mut labels = domain.split(|&b| b == b'.');
    let tld = labels.next_back().unwrap_or_default();
    local_ok
        && domain.contains(&b'.')
        && tld.len() >= 2
        && tld.iter().all(u8::is_ascii_alphabetic)
        && labels.all(|label| {
            !label.is_empty()
                && label
                    .iter()
                    .all(|&b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// A relative path or a namespaced name: names of letters (and `.`, `_`, `-`) joined by
/// slashes, a name on each side of every slash (`conf/app.yml`, `kube-system/coredns-abcde`).
fn is_relative_path(token: &[u8]) -> bool {
    token.split(|&b| b == b'/').all(|name| {
        !name.is_empty()
            && name.iter().any(u8::is_ascii_alphabetic)
            && name
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    })
}

/// Classifies one token (trailing punctuation already removed).
fn classify(token: &[u8]) -> Option<&'static str> {
    if is_windows_path(token) {
        return Some(mask::PATH);
    }
    // One pass for what the shapes below depend on, so most tokens are ruled out of most
    // shapes without reading them again.
    let (mut digit, mut alpha, mut slash, mut at) = (false, false, false, false);
    for &b in token {
        digit |= b.is_ascii_digit();
        alpha |= b.is_ascii_alphabetic();
        slash |= b == b'/';
        at |= b == b'@';
    }
    if at && is_email(token) {
        return Some(mask::EMAIL);
    }
    if !digit {
        // Paths and URLs need no digit: `/user/root/x`, `https://example.com/login`, and
        // neither do relative paths or names within a namespace (`conf/app.yml`,
        // `monitoring/web-abcde`, `application/json`).
        let path = token.len() > 1 && token[0] == b'/' && token[1..].contains(&b'/');
        let url = slash && token.windows(3).any(|w| w == b"://");
        return (path || url || (slash && is_relative_path(token))).then_some(mask::PATH);
    }
    // Addresses and numbers hold no letter; hex values (`0x1f`, `deadbeef01`) do.
    if is_block(token) {
        Some(mask::BLOCK)
    } else if !alpha && is_ipv4(token) {
        Some(mask::IP)
    } else if is_uuid(token) {
        Some(mask::UUID)
    } else if !alpha && is_number(token) {
        Some(mask::NUM)
    } else if alpha && is_hex(token) {
        Some(mask::HEX)
    } else if slash {
        Some(mask::PATH)
    } else {
        Some(mask::ID)
    }
}

/// Where an IPv4 address (with optional port) ends inside `token` when a word follows it
/// after a colon: the index of that colon.
fn glued_address(token: &str) -> Option<usize> {
    let bytes = token.as_bytes();
    bytes.iter().enumerate().find_map(|(i, &b)| {
        (b == b':' && bytes.get(i + 1).is_some_and(u8::is_ascii_alphabetic) && is_ipv4(&bytes[..i]))
            .then_some(i)
    })
}

/// A month or weekday name (`Jun`, `June`, `Sun`), capitalized as dates write it.
fn is_date_word(token: &str) -> bool {
    // Most words are not: the length and the capital rule them out before any comparison.
    if !(3..=9).contains(&token.len()) || !token.as_bytes()[0].is_ascii_uppercase() {
        return false;
    }
    const NAMES: [&str; 38] = [
        "Jan",
        "Feb",
        "Mar",
        "Apr",
        "May",
        "Jun",
        "Jul",
        "Aug",
        "Sep",
        "Sept",
        "Oct",
        "Nov",
        "Dec",
        "January",
        "February",
        "March",
        "April",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
        "Mon",
        "Tue",
        "Wed",
        "Thu",
        "Fri",
        "Sat",
        "Sun",
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
    ];
    NAMES.contains(&token)
}

/// Whether `rest` (after a month or weekday name) goes on with a day number or another
/// month name (`Sun Jul 17`): the name is then part of a date.
fn date_follows(rest: &[u8]) -> bool {
    let start = rest.iter().position(|b| *b != b' ').unwrap_or(rest.len());
    if start == 0 || start == rest.len() {
        return false;
    }
    let rest = &rest[start..];
    if rest[0].is_ascii_digit() {
        return true;
    }
    let end = rest
        .iter()
        .position(|&b| is_separator(b))
        .unwrap_or(rest.len());
    std::str::from_utf8(&rest[..end]).is_ok_and(|next| {
        is_date_word(next)
            && rest[end..]
                .iter()
                .find(|b| **b != b' ')
                .is_some_and(u8::is_ascii_digit)
    })
}

/// Appends a placeholder, unless the template already ends with the same one (`<IP> <IP>`
/// becomes `<IP>`): a list of values is one value of variable length.
fn push_token(out: &mut String, placeholder: &str) {
    let previous = out.trim_end_matches([' ', ',']);
    if previous.ends_with(placeholder) && previous.len() < out.len() {
        out.truncate(previous.len());
    } else {
        out.push_str(placeholder);
    }
}

/// Masks the variable parts of `text` and writes the template into `out` (cleared first).
/// Tokens are separated by single spaces in the template; other separators are kept. A
/// multiline event (a logged line with its stack trace) is templated by its first line plus
/// the exception its trace names, so every occurrence of one failure shares one template
/// whatever its frames.
pub fn template_into(text: &str, out: &mut String) {
    match text.split_once('\n') {
        None => template_line(text, out),
        Some((first, rest)) => {
            template_line(first.trim_end_matches('\r'), out);
            if let Some(exception) = deepsentry_core::multiline::trace_exception(rest) {
                if !out.is_empty() {
                    out.push(' ');
                }
                out.push_str(exception);
            }
        }
    }
}

/// [`template_into`] for one line.
fn template_line(line: &str, out: &mut String) {
    out.clear();
    let bytes = line.as_bytes();
    let mut i = 0;
    let mut pending_space = false;
    // The previous token ended a quoted request line (`"GET / HTTP/1.1"`) or was a status
    // key (`status=`): an HTTP status follows.
    let mut status_follows = false;
    if let Some(letter) = deepsentry_core::timestamp::glog_level(bytes) {
        // glog and klog glue the level's letter to the date (`E0115 14:23:47.1 ...`): the
        // letter is the line's level, the date a number.
        out.push(char::from(letter));
        pending_space = true;
        i = 1;
    }
    while i < bytes.len() {
        let b = bytes[i];
        if b.is_ascii_whitespace() {
            pending_space = !out.is_empty();
            i += 1;
            continue;
        }
        if b == ESCAPE {
            // Terminal colours (`\x1b[31mERROR\x1b[0m`) are not words: the line reads as if
            // printed without them.
            i = after_escape(bytes, i);
            continue;
        }
        if pending_space {
            out.push(' ');
            pending_space = false;
        }
        if is_separator(b) {
            out.push(b as char);
            i += 1;
            continue;
        }
        // A token is a run of ASCII or a run of other characters: languages written without
        // spaces (`用户123登录成功`) glue numbers and ids to their words, which must not make
        // the whole sentence one id.
        let start = i;
        let ascii = b.is_ascii();
        while i < bytes.len()
            && !is_separator(bytes[i])
            && bytes[i] != ESCAPE
            && bytes[i].is_ascii() == ascii
        {
            i += 1;
        }
        let mut token = &line[start..i];
        // Sentence punctuation after a value (`blk_1.`, `10.0.0.1:`) is not part of it.
        let mut trailing = "";
        while let Some(last) = token.as_bytes().last() {
            if matches!(last, b'.' | b':' | b',' | b'!' | b'?') && token.len() > 1 {
                trailing = &line[start + token.len() - 1..i];
                token = &token[..token.len() - 1];
            } else {
                break;
            }
        }
        // An address glued to the next word (`10.0.0.1:50010:Got`) is two tokens.
        if let Some(split) = glued_address(token) {
            push_token(out, mask::IP);
            out.push(':');
            token = &token[split + 1..];
        }
        // A status follows a request line or a status key; compact JSON glues the key's `:`
        // to the value (`"status":503`), and `"status": 503` has it alone between.
        let after_status = status_follows;
        status_follows = if token == ":" {
            after_status
        } else {
            trailing.is_empty() && bytes.get(i) == Some(&b'"') && is_http_version(token)
                || is_status_key(token)
        };
        let value = token.strip_prefix(':').unwrap_or(token);
        if let Some(status) = after_status.then(|| http_status(value)).flatten() {
            out.push_str(&token[..token.len() - value.len()]);
            out.push_str(status);
            out.push_str(trailing);
            continue;
        }
        match classify(token.as_bytes()) {
            Some(placeholder) => push_token(out, placeholder),
            None if trailing.is_empty() && is_date_word(token) && date_follows(&bytes[i..]) => {
                // `Jun 14 15:16:01`, `Sun Dec 04 ...`: part of a date, which is a number.
                push_token(out, mask::NUM);
            }
            None => out.push_str(token),
        }
        out.push_str(trailing);
    }
}

/// The byte that starts a terminal escape sequence.
const ESCAPE: u8 = 0x1b;

/// Where the terminal escape sequence at `bytes[at]` (an `ESC`) ends: a control sequence
/// (`ESC [` parameters, then a final byte from `@` to `~`: colours, cursor moves), an
/// operating system command (`ESC ]` ... `BEL` or `ESC \\`: window titles, links), or `ESC`
/// and one more ASCII byte.
fn after_escape(bytes: &[u8], at: usize) -> usize {
    let mut i = at + 1;
    match bytes.get(i) {
        Some(b'[') => {
            i += 1;
            while i < bytes.len() && !(0x40..=0x7e).contains(&bytes[i]) {
                i += 1;
            }
            (i + 1).min(bytes.len())
        }
        Some(b']') => {
            while i < bytes.len() {
                match bytes[i] {
                    0x07 => return i + 1,
                    ESCAPE if bytes.get(i + 1) == Some(&b'\\') => return i + 2,
                    _ => i += 1,
                }
            }
            i
        }
        Some(b) if b.is_ascii() => i + 1,
        _ => i,
    }
}

/// The template of `line` (see [`template_into`]).
pub fn template(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    template_into(line, &mut out);
    out
}

/// The word of a training template that stands for a field the normalizer could not mask but
/// training found variable: one log statement whose words differ in one place only, in many
/// ways (user names, program names), is one template with this word there.
pub const WILDCARD: &str = "<*>";

/// Whether `word` holds text of a script written without spaces between words (Chinese,
/// Japanese, Thai): there a "word" of the template is a phrase or a whole sentence
/// (`用户<NUM>登录成功`), and two of them differ as two statements do, not as two values of
/// one field.
pub fn is_phrase(word: &str) -> bool {
    !word.is_ascii()
        && word.chars().any(|c| {
            matches!(c,
                '\u{0E00}'..='\u{0EFF}' // Thai, Lao
                | '\u{3000}'..='\u{30FF}' // CJK punctuation, Hiragana, Katakana
                | '\u{3400}'..='\u{4DBF}' // CJK Extension A
                | '\u{4E00}'..='\u{9FFF}' // CJK Unified Ideographs
                | '\u{F900}'..='\u{FAFF}' // CJK Compatibility Ideographs
                | '\u{FF00}'..='\u{FFEF}' // full-width forms
            )
        })
}

/// The templates `words` (a template split on spaces) would be an instance of, one per word:
/// `words` with that word replaced by [`WILDCARD`], and its position. A masked value
/// (`<NUM>`) may be the field's value too (a user named `1234`); a phrase ([`is_phrase`])
/// may not.
pub fn wildcard_forms<'a>(words: &'a [&'a str]) -> impl Iterator<Item = (usize, String)> + 'a {
    (0..words.len())
        .filter(move |&i| words.len() >= 3 && words[i] != WILDCARD && !is_phrase(words[i]))
        .map(move |i| {
            let mut form = String::with_capacity(words.iter().map(|w| w.len() + 1).sum());
            for (j, word) in words.iter().enumerate() {
                if j > 0 {
                    form.push(' ');
                }
                form.push_str(if i == j { WILDCARD } else { word });
            }
            (i, form)
        })
}

/// Whether `words` (a template split on spaces) is an instance of `pattern`, a template with
/// fields ([`WILDCARD`]): a variant of it that differs in no word but its fields
/// ([`variant_distance`]), so no phrase fills a field and a field holds no word that makes
/// the line more or less severe than the pattern's statement (a `<5XX>` is no value of a
/// field that held `<2XX>`, `<3XX>` and `<4XX>`; training folds only words of one severity,
/// [`fold_words_with_values`]). A field of `words` is one of `pattern` too: `customer <*>
/// Smith` is an instance of `customer <*> <*>`, not of `customer Jane <*>`.
pub fn instance_of(pattern: &str, words: &[&str]) -> bool {
    pattern
        .split(' ')
        .zip(words)
        .all(|(p, w)| *w != WILDCARD || p == WILDCARD)
        && variant_distance(pattern, words, 0) == Some(0)
}

/// Fewest distinct words at one place of otherwise identical templates that make that place a
/// field: two may be a pair of states (`up`, `down`); three or more (user names, program
/// names) are values the normalizer could not mask.
pub const MIN_FIELD_VALUES: usize = 3;

/// Folds templates that differ in one word only, in at least [`MIN_FIELD_VALUES`] ways and
/// with the same severity, into one template with [`WILDCARD`] there (Drain's variable
/// positions), so that a log statement is one class however many values its unmasked field
/// took. Templates before `first_new` (a bundle's, being updated) keep their places, and a new
/// template that is an instance of one of theirs joins it. Returns each template's new index.
pub fn fold_variable_words(templates: &mut Vec<String>, first_new: usize) -> Vec<u32> {
    fold_words_with_values(templates, first_new, MIN_FIELD_VALUES)
}

/// [`fold_variable_words`] with places of at least `min_values` distinct words as fields.
/// Folding is repeated until nothing more folds, so a statement with two unmasked fields (a
/// customer's first and last name, a user and a host) is one template: the first pass folds
/// one field for each value of the other that came often enough, the next folds those.
pub fn fold_words_with_values(
    templates: &mut Vec<String>,
    first_new: usize,
    min_values: usize,
) -> Vec<u32> {
    let originals = templates.clone();
    let mut index: Vec<u32> = (0..templates.len() as u32).collect();
    loop {
        let before = templates.len();
        // The templates each one stands for now, for telling two fields from a family of
        // statements (see `independent_fields`).
        let mut stands_for: Vec<Vec<&str>> = vec![Vec::new(); templates.len()];
        for (original, &to) in originals.iter().zip(&index) {
            stands_for[to as usize].push(original);
        }
        let pass = fold_words_once(templates, first_new, min_values, &stands_for);
        for to in &mut index {
            *to = pass[*to as usize];
        }
        if templates.len() == before {
            break;
        }
    }
    // A template whose values were too rare to fold by one field at a time (a first and a
    // last name each seen once or twice) is still an instance of the folded statement.
    let joined = join_instances(templates, first_new);
    for to in &mut index {
        *to = joined[*to as usize];
    }
    index
}

/// Merges each template from `first_new` on that is an instance of a template with fields
/// ([`instance_of`]) into it (a template with fields of its own, into one before `first_new`
/// only). Returns each template's new index.
fn join_instances(templates: &mut Vec<String>, first_new: usize) -> Vec<u32> {
    use std::collections::HashMap;
    let mut patterns: HashMap<usize, Vec<u32>> = HashMap::new();
    for (id, template) in templates.iter().enumerate() {
        if template.split(' ').any(|w| w == WILDCARD) {
            let words = template.split(' ').count();
            patterns.entry(words).or_default().push(id as u32);
        }
    }
    let mut target: Vec<Option<u32>> = vec![None; templates.len()];
    if patterns.is_empty() {
        return renumber(templates, &target, HashMap::new());
    }
    for (id, template) in templates.iter().enumerate().skip(first_new) {
        let words: Vec<&str> = template.split(' ').collect();
        // A fold of this training joins only a bundle's template (being updated), which
        // stays where it is: `customer <*> Smith` made of new names joins the bundle's
        // `customer <*> <*>`.
        let folded = words.contains(&WILDCARD);
        target[id] = patterns.get(&words.len()).and_then(|candidates| {
            candidates
                .iter()
                .copied()
                .filter(|&p| !folded || (p as usize) < first_new)
                .find(|&p| instance_of(&templates[p as usize], &words))
        });
    }
    renumber(templates, &target, HashMap::new())
}

/// Drops the templates `target` merges into others (and gives the ones left the texts in
/// `forms`): templates before the first merged keep their places, the others close up.
/// Returns each template's new index.
fn renumber(
    templates: &mut Vec<String>,
    target: &[Option<u32>],
    mut forms: std::collections::HashMap<u32, String>,
) -> Vec<u32> {
    let mut index: Vec<u32> = vec![0; templates.len()];
    let mut kept = Vec::with_capacity(templates.len());
    for (id, template) in std::mem::take(templates).into_iter().enumerate() {
        let id = id as u32;
        if target[id as usize].is_none_or(|to| to == id) {
            index[id as usize] = kept.len() as u32;
            kept.push(forms.remove(&id).unwrap_or(template));
        }
    }
    for (id, to) in target.iter().enumerate() {
        if let Some(to) = *to {
            if to != id as u32 {
                index[id] = index[to as usize];
            }
        }
    }
    *templates = kept;
    index
}

/// One pass of [`fold_words_with_values`]: places of one word each.
fn fold_words_once(
    templates: &mut Vec<String>,
    first_new: usize,
    min_values: usize,
    stands_for: &[Vec<&str>],
) -> Vec<u32> {
    use std::collections::HashMap;
    let known: HashMap<&str, u32> = templates[..first_new]
        .iter()
        .enumerate()
        .filter(|(_, t)| t.split(' ').any(|w| w == WILDCARD))
        .map(|(i, t)| (t.as_str(), i as u32))
        .collect();
    let mut target: Vec<Option<u32>> = vec![None; templates.len()];
    // Templates by the wildcard forms they are an instance of, with their severity.
    let mut groups: HashMap<(String, crate::severity::Severity), Vec<u32>> = HashMap::new();
    for (id, template) in templates.iter().enumerate().skip(first_new) {
        let words: Vec<&str> = template.split(' ').collect();
        let severity = crate::severity::severity_of(template);
        for (_, form) in wildcard_forms(&words) {
            if let Some(&class) = known.get(form.as_str()) {
                if instance_of(&form, &words) {
                    target[id] = Some(class);
                    break;
                }
            }
            groups.entry((form, severity)).or_default().push(id as u32);
        }
    }
    extend_fields(templates, first_new, &mut groups);
    // The largest groups first; a template joins one group at most.
    let mut groups: Vec<((String, crate::severity::Severity), Vec<u32>)> = groups
        .into_iter()
        .filter(|(_, members)| members.len() >= min_values)
        .collect();
    groups.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then_with(|| a.0.cmp(&b.0)));
    let mut forms: HashMap<u32, String> = HashMap::new();
    for ((form, _), members) in groups {
        let free: Vec<u32> = members
            .into_iter()
            .filter(|&m| target[m as usize].is_none())
            .collect();
        if free.len() < min_values {
            continue;
        }
        // The place this group folds: where its member with the most fields (the folded
        // statement that others extend, see `extend_fields`) holds a word.
        let widest = free
            .iter()
            .copied()
            .max_by_key(|&m| {
                let fields = templates[m as usize].split(' ').filter(|w| *w == WILDCARD);
                (fields.count(), std::cmp::Reverse(m))
            })
            .unwrap_or(free[0]);
        let widest: Vec<&str> = templates[widest as usize].split(' ').collect();
        let at = (0..)
            .zip(form.split(' '))
            .find_map(|(i, w)| (w == WILDCARD && widest.get(i) != Some(&WILDCARD)).then_some(i));
        if let Some(at) = at {
            // As many distinct words there as a field of one place needs.
            let values: std::collections::HashSet<&str> = free
                .iter()
                .flat_map(|&m| &stands_for[m as usize])
                .filter_map(|original| original.split(' ').nth(at))
                .collect();
            if values.len() < min_values
                || !independent_fields(&free, templates, &form, at, stands_for)
            {
                continue;
            }
        }
        // The group takes the place of its first member.
        for &m in &free {
            target[m as usize] = Some(free[0]);
        }
        forms.insert(free[0], form);
    }
    // Known templates stay, the others follow in order, merged ones at their first.
    renumber(templates, &target, forms)
}

/// Adds to `groups` (templates by the form of one more field, as [`fold_words_once`] makes
/// them) the templates that are instances of a form because they differ from a folded
/// template of the same pass in its fields and in one place more: a customer's first and last
/// name, each seen once or twice, where one first name came with enough last names to fold
/// (`customer Mia <*>`), so that `customer John Lopez` is a value of `customer <*> <*>`
/// although no other first name came three times. Only forms some template already makes
/// get members this way: two words that vary together in no statement with a field of its
/// own (`auth ok`, `cache hit`) stay apart.
fn extend_fields(
    templates: &[String],
    first_new: usize,
    groups: &mut std::collections::HashMap<(String, crate::severity::Severity), Vec<u32>>,
) {
    use std::collections::HashSet;
    // The places of the fields folded so far, by word count.
    let mut field_places: HashSet<(usize, Vec<usize>)> = HashSet::new();
    for template in &templates[first_new..] {
        let words: Vec<&str> = template.split(' ').collect();
        let places: Vec<usize> = (0..words.len()).filter(|&i| words[i] == WILDCARD).collect();
        if !places.is_empty() {
            field_places.insert((words.len(), places));
        }
    }
    if field_places.is_empty() {
        return;
    }
    for (id, template) in templates.iter().enumerate().skip(first_new) {
        let mut words: Vec<&str> = template.split(' ').collect();
        if words.contains(&WILDCARD) {
            continue;
        }
        let severity = crate::severity::severity_of(template);
        let original = words.clone();
        let count = words.len();
        for (_, places) in field_places.iter().filter(|(len, _)| *len == count) {
            if places.iter().any(|&p| is_phrase(original[p])) {
                continue;
            }
            for &p in places {
                words[p] = WILDCARD;
            }
            for (_, form) in wildcard_forms(&words) {
                if let Some(members) = groups.get_mut(&(form, severity)) {
                    members.push(id as u32);
                }
            }
            words.clone_from(&original);
        }
    }
    // Members in the order of the templates, once each, as the forms' own.
    for members in groups.values_mut() {
        members.sort_unstable();
        members.dedup();
    }
}

/// Whether folding place `at` of the templates `members` (which may hold fields already) makes
/// a field independent of those: some value of an earlier field comes with two or more of
/// the values at `at` in the templates they stand for (a first and a last name: `Smith`
/// with `Jane` and with `John`). Where each value at `at` has values of its own there
/// (`cache hit/miss/stored`, `session opened/closed/expired`), the members are statements of
/// a family, each with its own field, not values of one. Only the values a member folded into
/// the field count: two unfolded statements sharing a word (`disk ok`, `auth ok`) say nothing
/// of the field `cache <*>`.
fn independent_fields(
    members: &[u32],
    templates: &[String],
    form: &str,
    at: usize,
    stands_for: &[Vec<&str>],
) -> bool {
    use std::collections::{HashMap, HashSet};
    let fields: Vec<usize> = form
        .split(' ')
        .enumerate()
        .filter(|&(i, w)| w == WILDCARD && i != at)
        .map(|(i, _)| i)
        .collect();
    if fields.is_empty() {
        return true;
    }
    fields.iter().any(|&field| {
        let folded: HashSet<&str> = members
            .iter()
            .filter(|&&m| templates[m as usize].split(' ').nth(field) == Some(WILDCARD))
            .flat_map(|&m| &stands_for[m as usize])
            .filter_map(|original| original.split(' ').nth(field))
            .collect();
        let mut with: HashMap<&str, HashSet<&str>> = HashMap::new();
        for &m in members {
            for original in &stands_for[m as usize] {
                let words: Vec<&str> = original.split(' ').collect();
                if let (Some(value), Some(here)) = (words.get(field), words.get(at)) {
                    if folded.contains(value) {
                        with.entry(value).or_default().insert(here);
                    }
                }
            }
        }
        with.values().any(|heres| heres.len() >= 2)
    })
}

/// Words a template may differ in from another and still be a variant of it, per word of the
/// template (at least one): one word or field in a short line, a few in a long one.
pub const VARIANT_WORDS_PER_WORD: f64 = 0.1;

/// How many words `words` (a template split on spaces) may differ in from a template it is a
/// variant of; `None` for a line of one or two words, which has no field to differ in.
pub fn variant_allowance(words: usize) -> Option<usize> {
    (words >= 3).then(|| ((words as f64 * VARIANT_WORDS_PER_WORD) as usize).max(1))
}

/// In how many words `other` differs from `words` when it is a variant of it: as many words,
/// at most `allowed` of them different, and the same severity. A level word may differ only
/// where the line's severity does not (`switch error 3 Link ok` and `... Link error` are one
/// statement with a status field), while `ERROR x` is another statement than `INFO x`. This is
/// Drain's idea of one template per log statement. Phrases ([`is_phrase`]) must be equal.
pub fn variant_distance(other: &str, words: &[&str], allowed: usize) -> Option<usize> {
    let mut differing = 0;
    let mut count = 0;
    let mut level_differs = false;
    for (a, b) in other.split(' ').zip(words) {
        count += 1;
        if a == *b {
            continue;
        }
        // A field found in training holds any word but a phrase, and any severity but its
        // statement's (checked below, as for a differing word).
        if is_phrase(a) || is_phrase(b) {
            return None;
        }
        level_differs |= crate::severity::names_severity(a) || crate::severity::names_severity(b);
        if a != WILDCARD && *b != WILDCARD {
            differing += 1;
            if differing > allowed {
                return None;
            }
        }
    }
    if count != words.len() || other.split(' ').count() != count {
        return None;
    }
    if level_differs
        && crate::severity::severity_of(other) != crate::severity::severity_of(&words.join(" "))
    {
        return None;
    }
    Some(differing)
}

/// The tokens of a template for feature hashing: words split on non-alphanumeric characters
/// (placeholders kept whole), lowercased.
pub fn tokens(template: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    let mut current = String::new();
    let mut chars = template.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '<' {
            // A placeholder such as `<NUM>`.
            let mut placeholder = String::from("<");
            while let Some(&next) = chars.peek() {
                placeholder.push(next);
                chars.next();
                if next == '>' {
                    break;
                }
            }
            if !current.is_empty() {
                tokens.push(std::mem::take(&mut current));
            }
            tokens.push(placeholder);
        } else if c.is_alphanumeric() {
            current.extend(c.to_lowercase());
        } else if !current.is_empty() {
            tokens.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        tokens.push(current);
    }
    tokens
}

#[cfg(test)]
mod tests;
