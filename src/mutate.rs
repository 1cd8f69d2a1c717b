//! Pure admission decisions: an admission request, the settings and the facts the
//! I/O layer looked up go in; a JSON Patch and the work to start come out. No I/O.

mod inputs;
mod outputs;
pub mod pods;
pub mod record;
pub mod secrets;
mod select;
pub mod settle;

use json_patch::jsonptr::PointerBuf;

/// A JSON Pointer from unescaped tokens: `["metadata", "labels", "privatize.io/gated"]`
/// → `/metadata/labels/privatize.io~1gated` (`~` and `/` in a token are escaped).
pub fn pointer<'t>(tokens: impl IntoIterator<Item = &'t str>) -> PointerBuf {
    PointerBuf::from_tokens(tokens)
}

/// Matches `text` against a glob where `*` is any run of characters (`/`, `.` and `:`
/// included) and `?` is one character; every other character is literal (so `[::1]`
/// is an IPv6 host, not a class). ASCII case is ignored.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    // Image references, hosts and namespace names are ASCII: bytes, no
    // allocation (this runs for every image and pattern of every admission).
    if pattern.is_ascii() && text.is_ascii() {
        return glob_match_by(pattern.as_bytes(), text.as_bytes(), |p, t| {
            p.eq_ignore_ascii_case(t)
        });
    }
    let pattern: Vec<char> = pattern.chars().collect();
    let text: Vec<char> = text.chars().collect();
    glob_match_by(&pattern, &text, |p, t| p.eq_ignore_ascii_case(t))
}

/// The glob match on any characters (`*`, `?` as in [`glob_match`]).
fn glob_match_by<C: Copy + PartialEq + From<u8>>(
    pattern: &[C],
    text: &[C],
    same: impl Fn(&C, &C) -> bool,
) -> bool {
    let (any, one) = (C::from(b'*'), C::from(b'?'));
    // Greedy match with one backtrack point (the last `*`): linear in practice,
    // never exponential, whatever the input.
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(c) if *c == any => {
                star = Some((p, t));
                p += 1;
            }
            Some(c) if *c == one || same(c, &text[t]) => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((star_p, star_t)) => {
                    p = star_p + 1;
                    t = star_t + 1;
                    star = Some((star_p, star_t + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|c| *c == any)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointer_escapes_slash_and_tilde() {
        assert_eq!(
            pointer(["metadata", "labels", "privatize.io/gated"]).as_str(),
            "/metadata/labels/privatize.io~1gated"
        );
        assert_eq!(pointer(["a~b/c"]).as_str(), "/a~0b~1c");
        assert_eq!(
            pointer(["spec", "containers", "0", "image"]).as_str(),
            "/spec/containers/0/image"
        );
    }

    #[test]
    fn glob_star_crosses_dots_slashes_and_colons() {
        assert!(glob_match("*.svc", "foo.ns.svc"));
        assert!(glob_match("*.svc", "a.svc"));
        assert!(!glob_match("*.svc", "svc"));
        assert!(!glob_match("*.svc", "foo.svc.cluster.local"));
        assert!(glob_match(
            "docker.io/library/*",
            "docker.io/library/nginx:1.27"
        ));
        assert!(!glob_match(
            "docker.io/library/*",
            "docker.io/bitnami/redis:7"
        ));
        assert!(glob_match("*", ""));
        assert!(glob_match("", ""));
        assert!(!glob_match("", "a"));
        assert!(glob_match("a*b*c", "axxbyyc"));
        assert!(!glob_match("a*b*c", "axxbyy"));
        assert!(glob_match("ku?e-*", "kube-system"));
    }

    #[test]
    fn glob_brackets_are_literal_and_case_is_ignored() {
        assert!(glob_match("[::1]", "[::1]"));
        assert!(!glob_match("[::1]", ":"));
        assert!(glob_match("Quay.IO", "quay.io"));
    }

    #[test]
    fn glob_matches_non_ascii_text_by_characters() {
        assert!(glob_match("caf?", "café"));
        assert!(glob_match("*é", "café"));
        assert!(!glob_match("caf?", "cafés"));
        assert!(glob_match("CAF*", "café"));
    }

    #[test]
    fn glob_with_many_stars_is_fast() {
        let pattern = "*a".repeat(30);
        let text = "a".repeat(29) + &"b".repeat(1000);
        assert!(!glob_match(&pattern, &text));
    }
}
