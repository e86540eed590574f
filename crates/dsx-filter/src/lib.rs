//! The one rsync-like path filter used by every dsx connector (full scans, monitoring, object-store keys).
//!
//! Paths handed to [`Filter::matches`] / [`Filter::may_descend`] are relative to the scanned asset root,
//! `/`-separated, without a leading slash (e.g. `sub1/a/report.pdf`). Leading/trailing slashes are ignored.
//!
//! # Syntax
//!
//! * Tokens are separated by commas and/or whitespace. Single or double quotes group characters (including
//!   spaces and commas) into one token; a quote may start anywhere in a token, so `-'not here'` is the exclude
//!   pattern `not here`. Inside quotes every character is literal.
//! * `-x` or `--exclude x` (also `--exclude=x`) is an **exclude**; `+x` or `--include x` (also `--include=x`)
//!   is an **include**; a bare token `x` is an include. A `-`/`+` only acts as a prefix when unquoted, so
//!   `'-x'` includes a name starting with a dash. The token after `--exclude`/`--include` is always taken
//!   literally as the pattern.
//! * Errors: unterminated quote ([`FilterError::UnterminatedQuote`]), `--exclude`/`--include` with nothing
//!   after it ([`FilterError::MissingPattern`]), an empty pattern such as `-`, `''` or `/`
//!   ([`FilterError::EmptyPattern`]).
//!
//! # Wildcards
//!
//! * `?` matches exactly one character other than `/`.
//! * `*` matches any run (possibly empty) of characters other than `/`.
//! * `**` matches anything, including `/`. As a whole component it matches zero or more directories in the
//!   middle or at the start (`a/**/b` matches `a/b` and `a/x/y/b`; `**/b` matches `b`), and one or more
//!   components at the end (`a/**` matches everything below `a`, not a file named `a`). Inside a component
//!   (`2025**`) it may cross slashes. There is no escaping and no `[...]` class.
//!
//! # Include patterns
//!
//! * Empty filter (or a filter with only excludes): everything, recursively.
//! * Exactly `*`: files at the top level only (`a.txt` yes, `sub/a.txt` no).
//! * No `/` and a wildcard (e.g. `*.zip`): matched against the **last path component at any depth**
//!   (`x/y/b.zip` yes).
//! * No `/` and no wildcard (e.g. `sub1`): a top-level file or the whole subtree of a top-level directory
//!   (`sub1/x/y.txt` yes; `sub10/a.txt`, `other/sub1/a.txt` no).
//! * Containing `/`: anchored at the root. If its last component is literal (`sub1/x`) it matches that path or
//!   anything below it; if its last component has a wildcard (`sub1/*`) it must match the whole path
//!   (`sub1/a.txt` yes, `sub1/x/y.txt` no).
//! * A leading `/` anchors a pattern at the root even without another `/` (`/*.zip`: top-level zips only).
//! * A trailing `/` restricts the pattern to directories, i.e. it matches only paths strictly below a matching
//!   directory.
//!
//! # Exclude patterns
//!
//! * Excludes always win over includes.
//! * Without `/` (e.g. `tmp`, `*.bak`): matches **any path component at any depth**; a matching component
//!   excludes the file and, for a directory, its whole subtree (`sub1/tmp/a` and `sub1/x/tmp/b` are excluded,
//!   `sub1/tmpfile` is not).
//! * With `/` (or a leading `/`): anchored at the root, excludes the matching path and everything below it.
//! * A trailing `/` excludes only directories (their contents), not files of that name.
//!
//! # Examples
//!
//! | filter | yes | no |
//! |---|---|---|
//! | `""` | everything | – |
//! | `*` | `a.txt` | `sub/a.txt` |
//! | `sub1` | `sub1/a.txt`, `sub1/x/y.txt` | `sub10/a.txt`, `other/sub1/a.txt`, `a.txt` |
//! | `sub1/*` | `sub1/a.txt` | `sub1/x/y.txt` |
//! | `*.zip,*.docx` | `a.zip`, `x/y/b.docx` | `a.pdf`, `a.zip.txt` |
//! | `sub1 -tmp --exclude sub2` | `sub1/a`, `sub1/tmpfile` | `sub1/tmp/a`, `sub1/x/tmp/b`, `sub1/sub2/c` |
//! | `test/2025*/** -sub2` | `test/2025-01/a.txt`, `test/2025/x/y.txt` | `test/2024/a.txt`, `test/2025-01/sub2/a.txt` |
//! | `'scan here' -'not here'` | `scan here/a.txt` | `scan here/not here/b.txt`, `elsewhere/a.txt` |
//!
//! # Pruning
//!
//! [`Filter::may_descend`] tells a walker whether a directory can contain matching files: it is `false` for a
//! directory removed by an exclude and for a directory below which no include can match (with `sub1`, `other`
//! is pruned); it errs on the side of `true`.
//!
//! Patterns are compiled once by [`Filter::parse`]; matching does not allocate.
//!
//! ```
//! use dsx_filter::Filter;
//!
//! let filter: Filter = "sub1 -tmp --exclude sub2".parse().unwrap();
//! assert!(filter.matches("sub1/x/report.pdf"));
//! assert!(!filter.matches("sub1/x/tmp/report.pdf"));
//! assert!(!filter.may_descend("other"));
//! assert!(Filter::parse("").unwrap().matches("any/depth/at/all"));
//! ```

#![forbid(unsafe_code)]

use std::fmt;
use std::str::FromStr;

/// Error returned by [`Filter::parse`].
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum FilterError {
    /// A `'` or `"` was opened but never closed.
    #[error("unterminated quote in filter")]
    UnterminatedQuote,
    /// `--exclude` / `--include` at the end of the filter, without a pattern.
    #[error("missing pattern after {0}")]
    MissingPattern(String),
    /// A pattern that is empty (e.g. `-`, `''`, `/`).
    #[error("empty pattern in filter")]
    EmptyPattern,
}

/// Maximum number of `**` embedded inside components of one pattern that are expanded into slash-crossing
/// alternatives; further ones behave like `*`.
const MAX_EMBEDDED_DOUBLE_STAR: usize = 6;

/// A compiled rsync-like include/exclude filter. See the crate documentation for the rules.
#[derive(Debug, Clone)]
pub struct Filter {
    spec: String,
    /// Alternatives; a path is included if any matches (or if there are none).
    includes: Vec<Box<[Seg]>>,
    /// A path is excluded if any matches.
    excludes: Vec<Box<[Seg]>>,
    /// A directory matching any of these has its whole subtree excluded.
    exclude_dirs: Vec<Box<[Seg]>>,
}

/// One compiled path-component matcher.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    /// `**`: zero or more components.
    Any,
    /// `*`: exactly one component.
    Star,
    /// Literal component.
    Lit(Box<[u8]>),
    /// `*literal`.
    Suffix(Box<[u8]>),
    /// `literal*`.
    Prefix(Box<[u8]>),
    /// Anything else with `?` / `*` inside one component.
    Glob(Box<[u8]>),
}

impl Seg {
    fn from_component(comp: &str) -> Seg {
        let b = comp.as_bytes();
        if b.len() >= 2 && b.iter().all(|&c| c == b'*') {
            return Seg::Any;
        }
        if comp == "*" {
            return Seg::Star;
        }
        let wild = |s: &[u8]| s.iter().any(|&c| c == b'*' || c == b'?');
        if !wild(b) {
            return Seg::Lit(b.into());
        }
        if b[0] == b'*' && !wild(&b[1..]) {
            return Seg::Suffix(b[1..].into());
        }
        if b[b.len() - 1] == b'*' && !wild(&b[..b.len() - 1]) {
            return Seg::Prefix(b[..b.len() - 1].into());
        }
        Seg::Glob(b.into())
    }

    #[inline]
    fn matches(&self, c: &[u8]) -> bool {
        match self {
            Seg::Any | Seg::Star => true,
            Seg::Lit(l) => **l == *c,
            Seg::Suffix(s) => c.ends_with(s),
            Seg::Prefix(p) => c.starts_with(p),
            Seg::Glob(g) => glob_component(g, c),
        }
    }
}

#[inline]
fn utf8_len(lead: u8) -> usize {
    if lead < 0x80 {
        1
    } else if lead >= 0xF0 {
        4
    } else if lead >= 0xE0 {
        3
    } else {
        2
    }
}

/// Glob over one component (no `/`): `?` = one char, `*` = any run. Linear-ish greedy with one backtrack point.
fn glob_component(pat: &[u8], s: &[u8]) -> bool {
    let (mut p, mut i) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while i < s.len() {
        if p < pat.len() {
            match pat[p] {
                b'*' => {
                    star = Some((p + 1, i));
                    p += 1;
                    continue;
                }
                b'?' => {
                    p += 1;
                    i += utf8_len(s[i]);
                    continue;
                }
                c if c == s[i] => {
                    p += 1;
                    i += 1;
                    continue;
                }
                _ => {}
            }
        }
        match star {
            Some((sp, si)) => {
                let ni = si + utf8_len(s[si]);
                star = Some((sp, ni));
                p = sp;
                i = ni;
            }
            None => return false,
        }
    }
    pat[p..].iter().all(|&c| c == b'*')
}

#[inline]
fn comp_end(path: &[u8], pos: usize) -> usize {
    match path[pos..].iter().position(|&c| c == b'/') {
        Some(off) => pos + off,
        None => path.len(),
    }
}

/// Does the segment list match the whole path? `**` segments act as sequence wildcards over components; greedy
/// matching with a single backtrack point is exact because every other segment consumes exactly one component.
fn match_segs(segs: &[Seg], path: &[u8]) -> bool {
    // Fast path for "last component at any depth" patterns such as `*.zip`.
    if let [Seg::Any, last] = segs {
        if *last != Seg::Any {
            if path.is_empty() {
                return false;
            }
            let start = path.iter().rposition(|&c| c == b'/').map_or(0, |i| i + 1);
            return last.matches(&path[start..]);
        }
    }
    let n = path.len();
    // `pos` is the start of the current component; `pos > n` means all components are consumed.
    let mut pos = if n == 0 { 1 } else { 0 };
    let mut p = 0usize;
    let mut star: Option<(usize, usize)> = None;
    loop {
        if p < segs.len() {
            if segs[p] == Seg::Any {
                if p + 1 == segs.len() {
                    return true;
                }
                star = Some((p + 1, pos));
                p += 1;
                continue;
            }
            if pos <= n {
                let end = comp_end(path, pos);
                if segs[p].matches(&path[pos..end]) {
                    p += 1;
                    pos = end + 1;
                    continue;
                }
            }
        } else if pos > n {
            return true;
        }
        match star {
            Some((sp, spos)) if spos <= n => {
                let next = comp_end(path, spos) + 1;
                star = Some((sp, next));
                p = sp;
                pos = next;
            }
            _ => return false,
        }
    }
}

/// Could the segment list match some path strictly below directory `dir`? (NFA simulation over components.)
fn may_match_below(segs: &[Seg], dir: &[u8]) -> bool {
    let len = segs.len();
    if len >= 64 {
        return true; // conservative
    }
    let closure = |mut s: u64| {
        for (i, seg) in segs.iter().enumerate() {
            if s & (1 << i) != 0 && *seg == Seg::Any {
                s |= 1 << (i + 1);
            }
        }
        s
    };
    let mut state = closure(1);
    if !dir.is_empty() {
        for comp in dir.split(|&c| c == b'/') {
            let mut next = 0u64;
            for (i, seg) in segs.iter().enumerate() {
                if state & (1 << i) == 0 {
                    continue;
                }
                if *seg == Seg::Any {
                    next |= 1 << i;
                } else if seg.matches(comp) {
                    next |= 1 << (i + 1);
                }
            }
            state = closure(next);
            if state == 0 {
                return false;
            }
        }
    }
    // Some position that can still consume at least one more component.
    state & ((1u64 << len) - 1) != 0
}

/// Expand `**` embedded inside components into `*` or `*/**/*` alternatives.
fn expand_embedded(pattern: &str) -> Vec<String> {
    let mut alts = vec![String::new()];
    let mut count = 0usize;
    for (ci, comp) in pattern.split('/').enumerate() {
        let whole = comp.len() >= 2 && comp.bytes().all(|c| c == b'*');
        let mut pieces: Vec<String> = Vec::new();
        if whole || !comp.contains("**") {
            pieces.push(comp.to_string());
        } else {
            // Split on runs of 2+ stars.
            let mut parts: Vec<&str> = Vec::new();
            let b = comp.as_bytes();
            let (mut start, mut i) = (0, 0);
            while i < b.len() {
                if b[i] == b'*' {
                    let mut j = i;
                    while j < b.len() && b[j] == b'*' {
                        j += 1;
                    }
                    if j - i >= 2 {
                        parts.push(&comp[start..i]);
                        start = j;
                    }
                    i = j;
                } else {
                    i += 1;
                }
            }
            parts.push(&comp[start..]);
            let mut acc = vec![parts[0].to_string()];
            for part in &parts[1..] {
                count += 1;
                let mut next = Vec::with_capacity(acc.len() * 2);
                for a in &acc {
                    next.push(format!("{a}*{part}"));
                    if count <= MAX_EMBEDDED_DOUBLE_STAR {
                        next.push(format!("{a}*/**/*{part}"));
                    }
                }
                acc = next;
            }
            pieces = acc;
        }
        let mut next = Vec::with_capacity(alts.len() * pieces.len());
        for a in &alts {
            for piece in &pieces {
                if ci == 0 {
                    next.push(piece.clone());
                } else {
                    next.push(format!("{a}/{piece}"));
                }
            }
        }
        alts = next;
    }
    alts
}

fn has_wildcard(s: &str) -> bool {
    s.bytes().any(|c| c == b'*' || c == b'?')
}

/// Compile the body components (no leading/trailing slash) into segments.
fn body_segs(body: &str) -> Vec<Seg> {
    let comps: Vec<&str> = body.split('/').filter(|c| !c.is_empty()).collect();
    let mut segs = Vec::with_capacity(comps.len() + 2);
    for (i, comp) in comps.iter().enumerate() {
        let seg = Seg::from_component(comp);
        if seg == Seg::Any && i + 1 == comps.len() {
            // Trailing `**`: one or more components.
            segs.push(Seg::Star);
        }
        segs.push(seg);
    }
    segs
}

fn push_dedup(segs: &mut Vec<Seg>, seg: Seg) {
    if !(seg == Seg::Any && segs.last() == Some(&Seg::Any)) {
        segs.push(seg);
    }
}

fn finish(lead_any: bool, body: Vec<Seg>, tail: &[Seg]) -> Box<[Seg]> {
    let mut out = Vec::with_capacity(body.len() + 3);
    if lead_any {
        out.push(Seg::Any);
    }
    for s in body.into_iter().chain(tail.iter().cloned()) {
        push_dedup(&mut out, s);
    }
    out.into_boxed_slice()
}

fn add_unique(list: &mut Vec<Box<[Seg]>>, segs: Box<[Seg]>) {
    if !list.contains(&segs) {
        list.push(segs);
    }
}

impl Filter {
    /// The filter that matches everything (same as `Filter::parse("")`).
    pub fn everything() -> Filter {
        Filter { spec: String::new(), includes: Vec::new(), excludes: Vec::new(), exclude_dirs: Vec::new() }
    }

    /// Parse and compile a filter spec. See the crate documentation for the syntax.
    pub fn parse(spec: &str) -> Result<Filter, FilterError> {
        let mut filter = Filter::everything();
        filter.spec = spec.to_string();
        let mut pending: Option<(&'static str, bool)> = None; // (flag, is_exclude)
        for tok in tokenize(spec)? {
            let (is_exclude, pattern) = if let Some((_, excl)) = pending.take() {
                (excl, tok.text())
            } else {
                let unq = tok.unquoted_prefix();
                if unq == "--exclude" && tok.chars.len() == 9 {
                    pending = Some(("--exclude", true));
                    continue;
                } else if unq == "--include" && tok.chars.len() == 9 {
                    pending = Some(("--include", false));
                    continue;
                } else if unq.starts_with("--exclude=") {
                    (true, tok.text_from(10))
                } else if unq.starts_with("--include=") {
                    (false, tok.text_from(10))
                } else if unq.starts_with('-') {
                    (true, tok.text_from(1))
                } else if unq.starts_with('+') {
                    (false, tok.text_from(1))
                } else {
                    (false, tok.text())
                }
            };
            filter.add(&pattern, is_exclude)?;
        }
        if let Some((flag, _)) = pending {
            return Err(FilterError::MissingPattern(flag.to_string()));
        }
        Ok(filter)
    }

    fn add(&mut self, raw: &str, is_exclude: bool) -> Result<(), FilterError> {
        let anchored = raw.starts_with('/');
        let dir_only = raw.ends_with('/');
        let p = raw.trim_matches('/');
        if p.split('/').all(str::is_empty) {
            return Err(FilterError::EmptyPattern);
        }
        let has_slash = p.contains('/');
        let last = p.rsplit('/').find(|c| !c.is_empty()).unwrap_or("");
        let dir_tail: &[Seg] = &[Seg::Star, Seg::Any];
        let any_tail: &[Seg] = &[Seg::Any];
        for alt in expand_embedded(p) {
            let body = body_segs(&alt);
            if is_exclude {
                let lead = !anchored && !has_slash;
                add_unique(&mut self.excludes, finish(lead, body.clone(), if dir_only { dir_tail } else { any_tail }));
                add_unique(&mut self.exclude_dirs, finish(lead, body, any_tail));
            } else {
                let (lead, tail): (bool, &[Seg]) = if anchored || has_slash {
                    (
                        false,
                        if dir_only {
                            dir_tail
                        } else if has_wildcard(last) {
                            &[]
                        } else {
                            any_tail
                        },
                    )
                } else if p == "*" {
                    (false, if dir_only { dir_tail } else { &[] })
                } else if has_wildcard(p) {
                    (true, if dir_only { dir_tail } else { &[] })
                } else {
                    (false, if dir_only { dir_tail } else { any_tail })
                };
                add_unique(&mut self.includes, finish(lead, body, tail));
            }
        }
        Ok(())
    }

    /// Whether the file at `rel_path` (relative to the asset root, `/`-separated) is selected.
    pub fn matches(&self, rel_path: &str) -> bool {
        let path = rel_path.trim_matches('/').as_bytes();
        if self.excludes.iter().any(|s| match_segs(s, path)) {
            return false;
        }
        self.includes.is_empty() || self.includes.iter().any(|s| match_segs(s, path))
    }

    /// Whether a walker should descend into directory `rel_dir` ("" is the root): `false` when the directory
    /// is excluded or no include can match anything below it. Conservative: may return `true` needlessly.
    pub fn may_descend(&self, rel_dir: &str) -> bool {
        let dir = rel_dir.trim_matches('/').as_bytes();
        if !dir.is_empty() && self.exclude_dirs.iter().any(|s| match_segs(s, dir)) {
            return false;
        }
        self.includes.is_empty() || self.includes.iter().any(|s| may_match_below(s, dir))
    }

    /// The original filter text.
    pub fn spec(&self) -> &str {
        &self.spec
    }

    /// Key prefixes (relative to the asset) that together hold every path the includes can
    /// match, for object stores that list by prefix; `None` when some include can match
    /// anywhere (`*.zip`, or no includes at all), so the whole asset must be listed. Only a
    /// narrowing hint: every listed path still goes through [`Filter::matches`].
    pub fn listing_prefixes(&self) -> Option<Vec<String>> {
        if self.includes.is_empty() {
            return None;
        }
        let mut prefixes: Vec<String> = Vec::new();
        for include in &self.includes {
            let mut parts: Vec<&[u8]> = Vec::new();
            let mut tail: Option<&[u8]> = None;
            for seg in include.iter() {
                match seg {
                    Seg::Lit(l) => parts.push(l),
                    Seg::Prefix(p) => {
                        tail = Some(p);
                        break;
                    }
                    _ => break,
                }
            }
            let mut prefix = parts.join(&b'/');
            if let Some(p) = tail {
                if !prefix.is_empty() {
                    prefix.push(b'/');
                }
                prefix.extend_from_slice(p);
            }
            if prefix.is_empty() {
                return None;
            }
            prefixes.push(String::from_utf8_lossy(&prefix).into_owned());
        }
        prefixes.sort();
        // A prefix covered by a shorter one would list the same keys twice.
        let mut out: Vec<String> = Vec::new();
        for p in prefixes {
            if !out.iter().any(|o| p.starts_with(o.as_str())) {
                out.push(p);
            }
        }
        Some(out)
    }

    /// True when the filter selects every path (no includes and no excludes).
    pub fn is_everything(&self) -> bool {
        self.includes.is_empty() && self.excludes.is_empty()
    }
}

impl Default for Filter {
    fn default() -> Self {
        Filter::everything()
    }
}

impl FromStr for Filter {
    type Err = FilterError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Filter::parse(s)
    }
}

impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.spec)
    }
}

/// A token: characters with a flag telling whether each was quoted.
struct Token {
    chars: Vec<(char, bool)>,
}

impl Token {
    /// The leading run of unquoted characters.
    fn unquoted_prefix(&self) -> String {
        self.chars.iter().take_while(|(_, q)| !q).map(|(c, _)| *c).collect()
    }
    fn text(&self) -> String {
        self.text_from(0)
    }
    fn text_from(&self, skip: usize) -> String {
        self.chars.iter().skip(skip).map(|(c, _)| *c).collect()
    }
}

fn tokenize(spec: &str) -> Result<Vec<Token>, FilterError> {
    let mut tokens = Vec::new();
    let mut cur: Vec<(char, bool)> = Vec::new();
    let mut in_token = false;
    let mut quote: Option<char> = None;
    for c in spec.chars() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => cur.push((c, true)),
            None if c == '\'' || c == '"' => {
                quote = Some(c);
                in_token = true;
            }
            None if c == ',' || c.is_whitespace() => {
                if in_token {
                    tokens.push(Token { chars: std::mem::take(&mut cur) });
                    in_token = false;
                }
            }
            None => {
                cur.push((c, false));
                in_token = true;
            }
        }
    }
    if quote.is_some() {
        return Err(FilterError::UnterminatedQuote);
    }
    if in_token {
        tokens.push(Token { chars: cur });
    }
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(spec: &str) -> Filter {
        Filter::parse(spec).unwrap_or_else(|e| panic!("parse {spec:?}: {e}"))
    }

    fn check(spec: &str, yes: &[&str], no: &[&str]) {
        let filter = f(spec);
        for p in yes {
            assert!(filter.matches(p), "{spec:?} should match {p:?}");
        }
        for p in no {
            assert!(!filter.matches(p), "{spec:?} should not match {p:?}");
        }
    }

    #[test]
    fn empty_matches_everything() {
        check("", &["a.txt", "sub/a.txt", "a/b/c/d/e.pdf", "sub1/tmp/x", "x y/z"], &[]);
        check("  , ,", &["a", "b/c"], &[]);
        assert!(f("").is_everything());
        assert!(Filter::everything().matches("deep/er/path"));
        assert!(f("").may_descend("anything/at/all"));
    }

    #[test]
    fn star_is_top_level_files() {
        check("*", &["a.txt", "b", ".hidden"], &["sub/a.txt", "a/b/c"]);
        let filter = f("*");
        assert!(filter.may_descend(""));
        assert!(!filter.may_descend("sub"));
    }

    #[test]
    fn literal_is_top_level_subtree() {
        check(
            "sub1",
            &["sub1", "sub1/a.txt", "sub1/x/y.txt", "sub1/x/y/z/w"],
            &["sub10/a.txt", "other/sub1/a.txt", "a.txt", "sub", "sub1x"],
        );
        let filter = f("sub1");
        assert!(filter.may_descend(""));
        assert!(filter.may_descend("sub1"));
        assert!(filter.may_descend("sub1/x/y"));
        assert!(!filter.may_descend("other"));
        assert!(!filter.may_descend("sub10"));
    }

    #[test]
    fn dir_star_is_direct_files() {
        check("sub1/*", &["sub1/a.txt", "sub1/b"], &["sub1/x/y.txt", "sub1", "a.txt", "sub2/a.txt"]);
        let filter = f("sub1/*");
        assert!(filter.may_descend("sub1"));
        assert!(!filter.may_descend("sub1/x"));
        assert!(!filter.may_descend("sub2"));
    }

    #[test]
    fn extensions_at_any_depth() {
        check(
            "*.zip,*.docx",
            &["a.zip", "x/y/b.docx", "deep/er/still/c.zip", ".zip"],
            &["a.pdf", "a.zip.txt", "a.zip/b.txt", "x/a.docx.bak", "zip"],
        );
        check("*.zip, *.docx", &["a.zip", "b/c.docx"], &["a.pdf"]);
        assert!(f("*.zip").may_descend("any/dir"));
    }

    #[test]
    fn subtree_with_excludes() {
        check(
            "sub1 -tmp --exclude sub2",
            &["sub1/a", "sub1/tmpfile", "sub1/x/tmpx/c", "sub1/x/sub22"],
            &["sub1/tmp/a", "sub1/x/tmp/b", "sub1/sub2/c", "sub1/x/sub2", "sub1/tmp", "other/a", "tmp/a"],
        );
        let filter = f("sub1 -tmp --exclude sub2");
        assert!(filter.may_descend("sub1"));
        assert!(filter.may_descend("sub1/x"));
        assert!(!filter.may_descend("sub1/tmp"));
        assert!(!filter.may_descend("sub1/x/tmp"));
        assert!(!filter.may_descend("sub1/sub2"));
        assert!(!filter.may_descend("other"));
    }

    #[test]
    fn dated_subtrees_with_exclude() {
        check(
            "test/2025*/** -sub2",
            &["test/2025-01/a.txt", "test/2025/x/y.txt", "test/2025.x/a"],
            &["test/2024/a.txt", "test/2025-01/sub2/a.txt", "test/2025", "test/a.txt", "other/2025/a.txt"],
        );
        let filter = f("test/2025*/** -sub2");
        assert!(filter.may_descend("test"));
        assert!(filter.may_descend("test/2025-01"));
        assert!(filter.may_descend("test/2025-01/deeper"));
        assert!(!filter.may_descend("test/2024"));
        assert!(!filter.may_descend("test/2025-01/sub2"));
        assert!(!filter.may_descend("other"));
    }

    #[test]
    fn quoted_names_with_spaces() {
        check(
            "'scan here' -'not here'",
            &["scan here/a.txt", "scan here/x/b.txt"],
            &["scan here/not here/b.txt", "elsewhere/a.txt", "scan/here", "scan here/x/not here/c"],
        );
        check("\"scan here\",-\"not here\"", &["scan here/a.txt"], &["scan here/not here/b.txt"]);
        let filter = f("'scan here' -'not here'");
        assert!(!filter.may_descend("scan here/not here"));
        assert!(!filter.may_descend("elsewhere"));
    }

    #[test]
    fn anchored_pattern_with_literal_last_is_prefix() {
        check("sub1/x", &["sub1/x", "sub1/x/y.txt", "sub1/x/y/z"], &["sub1/xy", "sub1/y", "a/sub1/x"]);
        check("*/x", &["a/x", "b/x/c"], &["x", "a/b/x"]);
    }

    #[test]
    fn double_star_in_middle_and_start() {
        check("a/**/b", &["a/b", "a/x/b", "a/x/y/b", "a/x/b/c"], &["b", "a", "x/a/b", "a/xb"]);
        check("a/**/*.txt", &["a/b.txt", "a/x/y/c.txt"], &["b.txt", "a/b.pdf"]);
        check("**/b", &["b", "x/b", "x/y/b/c"], &["xb", "bx"]);
        check("a/**", &["a/b", "a/b/c"], &["a", "b/a/c"]);
        check("**", &["a", "a/b/c"], &[]);
        check("test/2025**", &["test/2025", "test/2025-01/x/y", "test/20251"], &["test/2024/x", "test2025"]);
        let filter = f("a/**/b");
        assert!(filter.may_descend("a/x/y"));
        assert!(!filter.may_descend("z"));
    }

    #[test]
    fn question_mark_and_globs() {
        check("?.txt", &["a.txt", "x/é.txt"], &["ab.txt", ".txt"]);
        check("a?c*d", &["abcd", "x/abcxxd", "aéc-d"], &["acd", "abcx", "a/cd"]);
        check("data/f?le*", &["data/file1", "data/fole"], &["data/fle", "data/x/file"]);
        check("*a*b*", &["ab", "xaybz", "q/aab"], &["ba", "a/b"]);
    }

    #[test]
    fn leading_and_trailing_slash() {
        check("/*.zip", &["a.zip"], &["x/a.zip"]);
        check("/sub1", &["sub1/a"], &["x/sub1/a"]);
        check("sub1/", &["sub1/a", "sub1/b/c"], &["sub1", "sub10/a"]);
        check("-tmp/", &["a/tmp", "tmp"], &["a/tmp/x", "tmp/y"]);
        check("-/tmp", &["a/tmp/x", "b"], &["tmp", "tmp/y"]);
        assert!(!f("-tmp/").may_descend("a/tmp"));
    }

    #[test]
    fn exclude_only_and_anchored_exclude() {
        check("-*.bak", &["a.txt", "b/c.txt"], &["a.bak", "x/y/z.bak", "old.bak/inside.txt"]);
        check("--exclude=sub1/x", &["sub1/y", "x/a", "a/sub1/x"], &["sub1/x", "sub1/x/z"]);
        check("+a.txt --include=b", &["a.txt", "b/c"], &["c", "x/a.txt"]);
        let filter = f("-sub1/x");
        assert!(filter.may_descend("sub1"));
        assert!(!filter.may_descend("sub1/x"));
        assert!(filter.may_descend("a/sub1/x"));
    }

    #[test]
    fn excludes_win() {
        check("sub1 -sub1", &[], &["sub1/a", "sub1"]);
        check("*.zip -*.zip", &[], &["a.zip"]);
    }

    #[test]
    fn quoting_rules() {
        check("'-dash'", &["-dash/a", "-dash"], &["dash/a"]);
        check("--exclude -weird", &["a", "weird"], &["-weird", "x/-weird/y"]);
        check("'a,b'", &["a,b/c"], &["a/c", "b/c"]);
        check("x'y z'", &["xy z/a"], &["x/a"]);
    }

    #[test]
    fn errors() {
        assert_eq!(Filter::parse("'abc").unwrap_err(), FilterError::UnterminatedQuote);
        assert_eq!(Filter::parse("a \"b").unwrap_err(), FilterError::UnterminatedQuote);
        assert_eq!(Filter::parse("a --exclude").unwrap_err(), FilterError::MissingPattern("--exclude".into()));
        assert_eq!(Filter::parse("--include").unwrap_err(), FilterError::MissingPattern("--include".into()));
        assert_eq!(Filter::parse("-").unwrap_err(), FilterError::EmptyPattern);
        assert_eq!(Filter::parse("+").unwrap_err(), FilterError::EmptyPattern);
        assert_eq!(Filter::parse("''").unwrap_err(), FilterError::EmptyPattern);
        assert_eq!(Filter::parse("a -''").unwrap_err(), FilterError::EmptyPattern);
        assert_eq!(Filter::parse("/").unwrap_err(), FilterError::EmptyPattern);
        assert_eq!(Filter::parse("--exclude=").unwrap_err(), FilterError::EmptyPattern);
    }

    #[test]
    fn spec_display_and_from_str() {
        let filter: Filter = "sub1 -tmp".parse().unwrap();
        assert_eq!(filter.spec(), "sub1 -tmp");
        assert_eq!(filter.to_string(), "sub1 -tmp");
        assert_eq!(Filter::default().spec(), "");
    }

    /// Reference full-path matcher (NFA simulation) to cross-check the greedy `match_segs`.
    fn nfa_full_match(segs: &[Seg], path: &str) -> bool {
        let n = segs.len();
        let closure = |mut s: Vec<bool>| {
            for i in 0..n {
                if s[i] && segs[i] == Seg::Any {
                    s[i + 1] = true;
                }
            }
            s
        };
        let mut state = vec![false; n + 1];
        state[0] = true;
        state = closure(state);
        if !path.is_empty() {
            for comp in path.split('/') {
                let mut next = vec![false; n + 1];
                for i in 0..n {
                    if state[i] {
                        if segs[i] == Seg::Any {
                            next[i] = true;
                        } else if segs[i].matches(comp.as_bytes()) {
                            next[i + 1] = true;
                        }
                    }
                }
                state = closure(next);
            }
        }
        state[n]
    }

    proptest::proptest! {
        #[test]
        fn greedy_matches_reference(
            pat in proptest::collection::vec(proptest::sample::select(vec!["**", "*", "a", "b", "a*", "*b", "?"]), 0..6),
            path in proptest::collection::vec(proptest::sample::select(vec!["a", "b", "ab", "ba", "c"]), 0..7),
        ) {
            let segs: Vec<Seg> = pat.iter().map(|c| Seg::from_component(c)).collect();
            let path = path.join("/");
            proptest::prop_assert_eq!(match_segs(&segs, path.as_bytes()), nfa_full_match(&segs, &path));
        }
    }

    #[test]
    fn glob_component_basics() {
        assert!(glob_component(b"*", b""));
        assert!(glob_component(b"a*b*c", b"aXbYc"));
        assert!(!glob_component(b"a*b*c", b"aXbY"));
        assert!(glob_component(b"??", "é!".as_bytes()));
        assert!(!glob_component(b"?", b""));
    }

    #[test]
    fn listing_prefixes_cover_every_match() {
        let hints = |spec: &str| Filter::parse(spec).unwrap().listing_prefixes();
        assert_eq!(hints(""), None);
        assert_eq!(hints("*.zip"), None, "matches at any depth");
        assert_eq!(hints("-tmp"), None, "excludes only");
        assert_eq!(hints("sub1"), Some(vec!["sub1".to_owned()]));
        assert_eq!(hints("sub1/x/*.pdf, sub2"), Some(vec!["sub1/x".to_owned(), "sub2".to_owned()]));
        assert_eq!(hints("test/2025*/** -sub2"), Some(vec!["test/2025".to_owned()]));
        assert_eq!(hints("a, a/b"), Some(vec!["a".to_owned()]), "covered prefixes are dropped");
        assert_eq!(hints("sub1, *.zip"), None);
        // Every path the filter selects starts with one of its hints.
        let f = Filter::parse("sub1/x/*.pdf, sub2 -tmp").unwrap();
        let hs = f.listing_prefixes().unwrap();
        for path in ["sub1/x/a.pdf", "sub2/b/c.txt", "sub2"] {
            assert!(f.matches(path) && hs.iter().any(|h| path.starts_with(h.as_str())), "{path}");
        }
    }
}
