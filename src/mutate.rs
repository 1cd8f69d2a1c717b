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
    let pattern: Vec<char> = pattern.chars().map(|c| c.to_ascii_lowercase()).collect();
    let text: Vec<char> = text.chars().map(|c| c.to_ascii_lowercase()).collect();
    // Greedy match with one backtrack point (the last `*`): linear in practice,
    // never exponential, whatever the input.
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some('*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == '?' || c == text[t] => {
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
    pattern[p..].iter().all(|&c| c == '*')
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
    fn glob_with_many_stars_is_fast() {
        let pattern = "*a".repeat(30);
        let text = "a".repeat(29) + &"b".repeat(1000);
        assert!(!glob_match(&pattern, &text));
    }
}
