//! The tidy test: house rules checked over every `.rs` file of the repository.
//!
//! Each rule is one `#[test]` that lists every place breaking it as `path:line: what`, so
//! one run shows all of them. Files under any `target/` folder and hidden folders are
//! skipped. The rules read a lightly lexed view of each line (code with string contents
//! removed, comments apart), which is a heuristic, not a parser: it handles strings, raw
//! strings, char literals and nested block comments, which is all the rules need.
//!
//! Tokens that the rules look for are assembled with `concat!` so this file does not
//! match itself.

use std::path::{Path, PathBuf};

/// Longest allowed line, in characters.
const LINE_CHARS_MAX: usize = 120;
/// Longest allowed function outside tests, in lines from `fn` to its closing brace.
const FUNCTION_LINES_MAX: usize = 150;
/// Lines above an unsafe block (not counting comment lines) searched for its `SAFETY:`.
const SAFETY_LINES_BACK: usize = 3;
/// Characters a crate doc must hold at least, to tell a paragraph from a placeholder.
const CRATE_DOC_CHARS_MIN: usize = 40;

const FORBIDDEN_MACROS: [&str; 3] = [
    concat!("to", "do!("),
    concat!("unimpl", "emented!("),
    concat!("db", "g!("),
];
const FORBIDDEN_COMMENT_WORDS: [&str; 2] = [concat!("FIX", "ME"), concat!("X", "XX")];
const SAFETY_COMMENT: &str = concat!("SAFE", "TY:");
const SAFETY_SECTION: &str = concat!("# Safe", "ty");
const UNSAFE_KEYWORD: &str = concat!("uns", "afe");

/// One source file, read and lexed.
struct SourceFile {
    /// Path relative to the repository root, with `/` separators.
    relative: String,
    lines: Vec<Line>,
}

/// One line of a source file.
struct Line {
    raw: String,
    /// The code of the line: comments removed, string and char literal contents removed
    /// (their quotes kept).
    code: String,
    /// The text of the comments on the line (line, doc and block comments).
    comment: String,
}

impl Line {
    fn is_comment_only(&self) -> bool {
        self.code.trim().is_empty() && !self.comment.trim().is_empty()
    }

    fn is_attribute(&self) -> bool {
        self.code.trim_start().starts_with("#[")
    }
}

/// Lexer state carried from one line to the next.
#[derive(Clone, Copy, PartialEq, Eq)]
enum LexState {
    Code,
    BlockComment { depth: usize },
    Str,
    RawStr { hashes: usize },
}

fn is_identifier_char(character: char) -> bool {
    character.is_alphanumeric() || character == '_'
}

/// Splits a file into lines with code and comments apart.
fn lex(text: &str) -> Vec<Line> {
    let mut state = LexState::Code;
    let mut lines = Vec::new();
    for raw in text.lines() {
        let characters: Vec<char> = raw.chars().collect();
        let mut code = String::new();
        let mut comment = String::new();
        let mut index = 0;
        while index < characters.len() {
            let character = characters[index];
            let next = characters.get(index + 1).copied();
            match state {
                LexState::BlockComment { depth } => {
                    if character == '/' && next == Some('*') {
                        state = LexState::BlockComment { depth: depth + 1 };
                        index += 2;
                    } else if character == '*' && next == Some('/') {
                        state = if depth == 1 {
                            LexState::Code
                        } else {
                            LexState::BlockComment { depth: depth - 1 }
                        };
                        index += 2;
                    } else {
                        comment.push(character);
                        index += 1;
                    }
                }
                LexState::Str => {
                    if character == '\\' {
                        index += 2;
                    } else {
                        if character == '"' {
                            code.push('"');
                            state = LexState::Code;
                        }
                        index += 1;
                    }
                }
                LexState::RawStr { hashes } => {
                    let closes =
                        character == '"' && (1..=hashes).all(|offset| characters.get(index + offset) == Some(&'#'));
                    if closes {
                        code.push('"');
                        state = LexState::Code;
                        index += 1 + hashes;
                    } else {
                        index += 1;
                    }
                }
                LexState::Code => {
                    let previous = index.checked_sub(1).map(|before| characters[before]);
                    let at_token_start = !previous.is_some_and(is_identifier_char);
                    if character == '/' && next == Some('/') {
                        comment.extend(&characters[index..]);
                        break;
                    } else if character == '/' && next == Some('*') {
                        state = LexState::BlockComment { depth: 1 };
                        index += 2;
                    } else if character == '"' {
                        code.push('"');
                        state = LexState::Str;
                        index += 1;
                    } else if let Some(hashes) = raw_string_opening(&characters, index, at_token_start) {
                        code.push('"');
                        state = LexState::RawStr { hashes };
                        index += hashes + 2 + usize::from(character == 'b');
                    } else if character == '\'' {
                        index += skip_char_literal(&characters, index, &mut code);
                    } else {
                        code.push(character);
                        index += 1;
                    }
                }
            }
        }
        lines.push(Line {
            raw: raw.to_string(),
            code,
            comment,
        });
    }
    lines
}

/// If a raw string (`r"`, `r#"`, `br##"` ...) opens at `index`, the number of its hashes.
fn raw_string_opening(characters: &[char], index: usize, at_token_start: bool) -> Option<usize> {
    if !at_token_start {
        return None;
    }
    let mut cursor = index;
    if characters[cursor] == 'b' {
        cursor += 1;
    }
    if characters.get(cursor) != Some(&'r') {
        return None;
    }
    cursor += 1;
    let mut hashes = 0;
    while characters.get(cursor) == Some(&'#') {
        hashes += 1;
        cursor += 1;
    }
    (characters.get(cursor) == Some(&'"')).then_some(hashes)
}

/// At a `'`: skips a char literal (keeping its quotes in `code`) or keeps a lifetime's
/// quote. Returns how many characters were consumed.
fn skip_char_literal(characters: &[char], index: usize, code: &mut String) -> usize {
    let next = characters.get(index + 1).copied();
    if next == Some('\\') {
        // An escaped char literal: '\n', '\'', '\u{1F600}' ...
        let close = (index + 3..characters.len()).find(|&cursor| characters[cursor] == '\'');
        if let Some(close) = close {
            code.push_str("''");
            return close - index + 1;
        }
    } else if characters.get(index + 2) == Some(&'\'') {
        code.push_str("''");
        return 3;
    }
    // A lifetime or a label.
    code.push('\'');
    1
}

/// Whether `text` holds `word` with no identifier character right before or after it.
fn contains_word(text: &str, word: &str) -> bool {
    text.match_indices(word).any(|(start, _)| {
        let before = text[..start].chars().next_back();
        let after = text[start + word.len()..].chars().next();
        !before.is_some_and(is_identifier_char) && !after.is_some_and(is_identifier_char)
    })
}

/// What follows each `unsafe` keyword of a line of code: `{`, `fn`, `impl`, `trait`, ...
fn unsafe_uses(code: &str) -> Vec<&str> {
    let mut uses = Vec::new();
    for (start, _) in code.match_indices(UNSAFE_KEYWORD) {
        let before = code[..start].chars().next_back();
        let rest = &code[start + UNSAFE_KEYWORD.len()..];
        if before.is_some_and(is_identifier_char) || rest.chars().next().is_some_and(is_identifier_char) {
            continue;
        }
        let rest = rest.trim_start();
        let end = rest
            .find(|character: char| !is_identifier_char(character))
            .unwrap_or(rest.len())
            .max(1)
            .min(rest.len());
        uses.push(&rest[..end]);
    }
    uses
}

fn repository_root() -> PathBuf {
    // Read at run time: a test binary cached in a shared target directory may have been
    // built from another checkout of the repository.
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string());
    let root = Path::new(&manifest_dir).join("../..");
    let root = root.canonicalize().expect("the repository root exists");
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).expect("the root has a Cargo.toml");
    assert!(
        manifest.contains("[workspace]"),
        "{} is not the workspace root: kiseki-tidy must live at tests/tidy",
        root.display()
    );
    root
}

fn collect_rust_files(directory: &Path, files: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(directory)
        .unwrap_or_else(|error| panic!("cannot list {}: {error}", directory.display()))
        .map(|entry| entry.expect("a readable directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        let name = path.file_name().and_then(|name| name.to_str()).unwrap_or_default();
        if path.is_dir() {
            if name != "target" && !name.starts_with('.') {
                collect_rust_files(&path, files);
            }
        } else if name.ends_with(".rs") {
            files.push(path);
        }
    }
}

fn source_files() -> Vec<SourceFile> {
    let root = repository_root();
    let mut paths = Vec::new();
    collect_rust_files(&root, &mut paths);
    let files: Vec<SourceFile> = paths
        .iter()
        .map(|path| {
            let text =
                std::fs::read_to_string(path).unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()));
            let relative = path.strip_prefix(&root).expect("under the root");
            let relative = relative
                .components()
                .map(|part| part.as_os_str().to_string_lossy())
                .collect::<Vec<_>>();
            SourceFile {
                relative: relative.join("/"),
                lines: lex(&text),
            }
        })
        .collect();
    assert!(
        files.iter().any(|file| file.relative == "tests/tidy/tests/tidy.rs"),
        "the walk did not find the tidy test itself"
    );
    files
}

fn report(rule: &str, problems: &[String]) {
    assert!(
        problems.is_empty(),
        "{rule}: {} place(s)\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[test]
fn no_placeholders_debugging_or_fix_me_markers() {
    let mut problems = Vec::new();
    for file in source_files() {
        for (number, line) in file.lines.iter().enumerate() {
            let text = format!("{} {}", line.code, line.comment);
            for token in FORBIDDEN_MACROS {
                if text.contains(token) {
                    problems.push(format!("{}:{}: `{token}` left behind", file.relative, number + 1));
                }
            }
            for word in FORBIDDEN_COMMENT_WORDS {
                if contains_word(&line.comment, word) {
                    problems.push(format!("{}:{}: {word} in a comment", file.relative, number + 1));
                }
            }
        }
    }
    report("placeholders, debugging and fix-me markers", &problems);
}

#[test]
fn crate_roots_open_with_a_crate_doc() {
    let mut problems = Vec::new();
    for file in source_files() {
        if !(file.relative.ends_with("src/lib.rs") || file.relative.ends_with("src/main.rs")) {
            continue;
        }
        let first = file.lines.iter().position(|line| !line.raw.trim().is_empty());
        let Some(first) = first.filter(|&first| file.lines[first].raw.trim_start().starts_with("//!")) else {
            problems.push(format!("{}: does not open with a `//!` crate doc", file.relative));
            continue;
        };
        let doc_chars: usize = file.lines[first..]
            .iter()
            .take_while(|line| line.raw.trim_start().starts_with("//!"))
            .map(|line| line.raw.trim_start().trim_start_matches("//!").trim().chars().count())
            .sum();
        if doc_chars < CRATE_DOC_CHARS_MIN {
            problems.push(format!(
                "{}: crate doc of {doc_chars} characters is a placeholder, not a paragraph",
                file.relative
            ));
        }
    }
    report("crate docs", &problems);
}

/// Whether the unsafe block on line `index` has a `SAFETY:` comment on its line or within
/// `SAFETY_LINES_BACK` lines above it (comment lines do not count against the distance, so a
/// long comment block is fine; another unsafe block in between ends the search).
fn unsafe_block_is_justified(lines: &[Line], index: usize) -> bool {
    if lines[index].comment.contains(SAFETY_COMMENT) {
        return true;
    }
    let mut lines_left = SAFETY_LINES_BACK;
    for line in lines[..index].iter().rev() {
        if line.comment.contains(SAFETY_COMMENT) {
            return true;
        }
        if unsafe_uses(&line.code).contains(&"{") {
            return false;
        }
        if !line.is_comment_only() {
            lines_left -= 1;
            if lines_left == 0 {
                return false;
            }
        }
    }
    false
}

/// Whether the unsafe item on line `index` has a `# Safety` section or a `SAFETY:` comment
/// in the comments and attributes right above it.
fn unsafe_item_is_justified(lines: &[Line], index: usize) -> bool {
    let justifies = |line: &Line| line.comment.contains(SAFETY_SECTION) || line.comment.contains(SAFETY_COMMENT);
    justifies(&lines[index])
        || lines[..index]
            .iter()
            .rev()
            .take_while(|line| line.is_comment_only() || line.is_attribute())
            .any(justifies)
}

#[test]
fn unsafe_code_is_justified() {
    let mut problems = Vec::new();
    for file in source_files() {
        for (index, line) in file.lines.iter().enumerate() {
            for used in unsafe_uses(&line.code) {
                let (justified, wanted) = match used {
                    "{" => (unsafe_block_is_justified(&file.lines, index), "a `// SAFETY:` comment"),
                    "fn" | "impl" | "trait" => (
                        unsafe_item_is_justified(&file.lines, index),
                        "a `# Safety` doc section or a `// SAFETY:` comment",
                    ),
                    _ => continue,
                };
                if !justified {
                    problems.push(format!(
                        "{}:{}: `unsafe {used}` without {wanted}",
                        file.relative,
                        index + 1
                    ));
                }
            }
        }
    }
    report("unsafe code", &problems);
}

#[test]
fn lines_fit_in_120_characters() {
    let mut problems = Vec::new();
    for file in source_files() {
        for (number, line) in file.lines.iter().enumerate() {
            let characters = line.raw.chars().count();
            // As rustfmt: code wraps at 120; a string literal that starts before the
            // limit may run past it (messages are easier to grep whole).
            let string_starts_before_limit = line.raw.chars().take(LINE_CHARS_MAX).any(|character| character == '"');
            if characters > LINE_CHARS_MAX && !string_starts_before_limit {
                problems.push(format!(
                    "{}:{}: {characters} characters (at most {LINE_CHARS_MAX})",
                    file.relative,
                    number + 1
                ));
            }
        }
    }
    report("line length", &problems);
}

/// Whether a line of code starts a function item (after visibility and qualifiers).
fn starts_function(code: &str) -> bool {
    let mut rest = code.trim_start();
    loop {
        if let Some(after) = rest.strip_prefix("pub(") {
            let Some(close) = after.find(')') else {
                return false;
            };
            rest = after[close + 1..].trim_start();
            continue;
        }
        let qualifier = [
            "pub ",
            "const ",
            "async ",
            "unsafe ",
            "default ",
            "extern \"\" ",
            "extern ",
        ]
        .iter()
        .find(|qualifier| rest.starts_with(**qualifier));
        match qualifier {
            Some(qualifier) => rest = rest[qualifier.len()..].trim_start(),
            None => return rest.starts_with("fn "),
        }
    }
}

/// The line index of the closing brace of the item that starts on line `start`, or `None`
/// when the item has no body (it ends with `;` first) or its braces never balance.
fn item_end(lines: &[Line], start: usize) -> Option<usize> {
    let mut nesting = 0usize; // parentheses and brackets of the signature
    let mut depth = 0usize; // braces of the body
    let mut opened = false;
    for (index, line) in lines.iter().enumerate().skip(start) {
        for character in line.code.chars() {
            match character {
                '(' | '[' if !opened => nesting += 1,
                ')' | ']' if !opened => nesting = nesting.saturating_sub(1),
                ';' if !opened && nesting == 0 => return None,
                '{' => {
                    opened = true;
                    depth += 1;
                }
                '}' if opened => {
                    depth -= 1;
                    if depth == 0 {
                        return Some(index);
                    }
                }
                _ => {}
            }
        }
    }
    None
}

#[test]
fn functions_are_short() {
    let mut problems = Vec::new();
    for file in source_files() {
        if file.relative.split('/').any(|part| part == "tests") {
            continue;
        }
        let lines = &file.lines;
        let mut index = 0;
        let mut test_only = false;
        while index < lines.len() {
            let code = lines[index].code.trim();
            if code == "#[cfg(test)]" {
                test_only = true;
            } else if test_only && !code.is_empty() && !lines[index].is_attribute() {
                // Skip the whole item `#[cfg(test)]` applies to (a test module or helper).
                test_only = false;
                if let Some(end) = item_end(lines, index) {
                    index = end;
                }
            } else if starts_function(code) {
                if let Some(end) = item_end(lines, index) {
                    let length = end - index + 1;
                    if length > FUNCTION_LINES_MAX {
                        problems.push(format!(
                            "{}:{}: function of {length} lines (at most {FUNCTION_LINES_MAX}): {}",
                            file.relative,
                            index + 1,
                            code
                        ));
                    }
                }
            }
            index += 1;
        }
    }
    report("function length", &problems);
}

#[test]
fn the_lexer_keeps_code_and_comments_apart() {
    let text = concat!(
        "let a = \"{ // not a comment\"; // a comment\n",
        "let b = r#\"unsafe { \"# ; /* block\n",
        "still block */ let c = '{'; let d = '\\'';\n",
        "fn e<'a>(x: &'a str) {}\n",
    );
    let lines = lex(text);
    assert_eq!(lines[0].code.trim(), "let a = \"\";");
    assert_eq!(lines[0].comment, "// a comment");
    assert_eq!(lines[1].code.trim(), "let b = \"\" ;");
    assert_eq!(lines[1].comment, " block");
    assert_eq!(lines[2].code.trim(), "let c = ''; let d = '';");
    assert_eq!(lines[3].code, "fn e<'a>(x: &'a str) {}");
    assert!(starts_function("    pub(crate) async unsafe fn x() {"));
    assert!(starts_function("const fn y() {"));
    assert!(!starts_function("let f = fn_pointer;"));
    assert_eq!(unsafe_uses(concat!("let x = uns", "afe { y };")), vec!["{"]);
    assert_eq!(unsafe_uses(concat!("pub uns", "afe fn z()")), vec!["fn"]);
    assert!(unsafe_uses(concat!("#![allow(uns", "afe_code)]")).is_empty());
    assert_eq!(item_end(&lex("fn f() -> [u8; 4] {\n    [0; 4]\n}\n"), 0), Some(2));
    assert_eq!(item_end(&lex("fn g(&self);\n"), 0), None);
    assert!(contains_word(concat!("// FIX", "ME: later"), concat!("FIX", "ME")));
    assert!(!contains_word("// 0xXXXX", concat!("X", "XX")));
}
