//! Settings for a method the service does not have: a per-method deadline,
//! rate limit or retry policy whose method name is misspelled (or in the
//! wrong case: names are case-sensitive, as in the proto) would silently do
//! nothing. Once the service's methods are known (a compiled router at
//! once, a learning one at its first registration), every such setting
//! becomes a warning: logged at WARN once, and listed in the admin
//! service's `ServiceStatus.warnings` while it holds.

/// A method a service's configuration names, and the setting naming it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedMethod {
    /// The method's name as configured (`SayHello`).
    pub name: String,
    /// The setting that names it, as the configuration writes it (for
    /// example `services."myservice.v1.Greeter".methods.SayHello`).
    pub setting: String,
}

/// One warning per method of `named` that `service`, whose methods are
/// `methods`, does not have: it names the setting, and the method meant
/// when one is close (the same but for case, or a letter or two apart).
pub fn unknown_method_warnings<'a>(
    service: &str,
    named: &[NamedMethod],
    methods: impl IntoIterator<Item = &'a str>,
) -> Vec<String> {
    let methods: Vec<&str> = methods.into_iter().collect();
    named
        .iter()
        .filter(|n| !methods.contains(&n.name.as_str()))
        .map(|n| {
            let hint = match closest(&n.name, &methods) {
                Some(close) if close.eq_ignore_ascii_case(&n.name) => {
                    format!("; did you mean `{close}`? (method names are case-sensitive)")
                }
                Some(close) => format!("; did you mean `{close}`?"),
                None => format!("; its methods: {}", list(&methods)),
            };
            format!(
                "`{}`: `{service}` has no method `{}`, so the setting does nothing{hint}",
                n.setting, n.name
            )
        })
        .collect()
}

/// The methods as `A, B, C` (the first ten).
fn list(methods: &[&str]) -> String {
    const SHOWN: usize = 10;
    let mut text = methods
        .iter()
        .take(SHOWN)
        .map(|m| format!("`{m}`"))
        .collect::<Vec<_>>()
        .join(", ");
    if methods.len() > SHOWN {
        text.push_str(&format!(" and {} more", methods.len() - SHOWN));
    }
    text
}

/// The method of `methods` closest to `name`: equal but for case, else at
/// most two edits away (case-insensitively).
fn closest<'a>(name: &str, methods: &[&'a str]) -> Option<&'a str> {
    if let Some(same) = methods.iter().find(|m| m.eq_ignore_ascii_case(name)) {
        return Some(same);
    }
    let lower = name.to_ascii_lowercase();
    methods
        .iter()
        .map(|m| (edits(&lower, &m.to_ascii_lowercase()), *m))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, m)| m)
}

/// The Levenshtein distance between `a` and `b` (by character).
fn edits(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitute = previous[j] + usize::from(ca != *cb);
            current[j + 1] = substitute.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        previous = current;
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(name: &str) -> NamedMethod {
        NamedMethod {
            name: name.to_owned(),
            setting: format!("services.\"a.B\".methods.{name}"),
        }
    }

    const METHODS: [&str; 3] = ["SayHello", "SayHelloStream", "Chat"];

    #[test]
    fn a_method_the_service_has_gives_no_warning() {
        assert!(unknown_method_warnings("a.B", &[named("SayHello")], METHODS).is_empty());
    }

    #[test]
    fn a_method_in_the_wrong_case_is_named_with_the_right_one() {
        let warnings = unknown_method_warnings("a.B", &[named("sayhello")], METHODS);
        assert_eq!(
            warnings,
            [
                "`services.\"a.B\".methods.sayhello`: `a.B` has no method `sayhello`, so the \
                 setting does nothing; did you mean `SayHello`? (method names are case-sensitive)"
            ]
        );
    }

    #[test]
    fn a_misspelled_method_is_named_with_the_closest_one() {
        let warnings = unknown_method_warnings("a.B", &[named("SayHelo")], METHODS);
        assert_eq!(warnings.len(), 1);
        assert!(
            warnings[0].ends_with("did you mean `SayHello`?"),
            "{warnings:?}"
        );
    }

    #[test]
    fn a_method_like_none_lists_the_service_methods() {
        let warnings = unknown_method_warnings("a.B", &[named("Export")], METHODS);
        assert!(
            warnings[0].ends_with("its methods: `SayHello`, `SayHelloStream`, `Chat`"),
            "{warnings:?}"
        );
        let many: Vec<String> = (0..12).map(|i| format!("Method{i:02}Long")).collect();
        let warnings =
            unknown_method_warnings("a.B", &[named("Zzz")], many.iter().map(String::as_str));
        assert!(warnings[0].ends_with("and 2 more"), "{warnings:?}");
    }

    #[test]
    fn edits_count_insertions_deletions_and_substitutions() {
        assert_eq!(edits("sayhello", "sayhello"), 0);
        assert_eq!(edits("sayhelo", "sayhello"), 1);
        assert_eq!(edits("sayhellp", "sayhello"), 1);
        assert_eq!(edits("", "abc"), 3);
        assert_eq!(edits("chat", "sayhello"), 7);
    }
}
