//! Naming: proto names to Rust identifiers, the way prost and tonic name them.

use heck::{ToShoutySnakeCase, ToSnakeCase, ToUpperCamelCase};

/// Escapes a Rust keyword the way prost-build does: `r#` where a raw
/// identifier is allowed, an `_` suffix for `self`, `super`, `crate`, `Self`,
/// `extern` and `_`, and an `_` prefix for names starting with a digit.
pub fn sanitize(ident: &str) -> String {
    match ident {
        "as" | "break" | "const" | "continue" | "else" | "enum" | "false" | "fn" | "for" | "if"
        | "impl" | "in" | "let" | "loop" | "match" | "mod" | "move" | "mut" | "pub" | "ref"
        | "return" | "static" | "struct" | "trait" | "true" | "type" | "unsafe" | "use"
        | "where" | "while" | "dyn" | "abstract" | "become" | "box" | "do" | "final" | "macro"
        | "override" | "priv" | "typeof" | "unsized" | "virtual" | "yield" | "async" | "await"
        | "try" | "gen" => format!("r#{ident}"),
        "_" | "super" | "self" | "Self" | "extern" | "crate" => format!("{ident}_"),
        s if s.starts_with(|c: char| c.is_ascii_digit()) => format!("_{ident}"),
        _ => ident.to_owned(),
    }
}

/// The `snake_case` form of a method name, used as its oneof arm name in the
/// generated router proto (`SayHello` -> `say_hello`).
pub fn proto_snake(name: &str) -> String {
    name.to_snake_case()
}

/// The `UpperCamelCase` name prost and tonic give a proto service or message,
/// before keyword escaping (`Greeter` -> `Greeter`, `greeter_v2` -> `GreeterV2`).
pub fn upper_camel(name: &str) -> String {
    name.to_upper_camel_case()
}

/// The `SCREAMING_SNAKE_CASE` form of a service name, the prefix of its
/// descriptor constant (`Greeter` -> `GREETER`).
pub fn shouty_snake(name: &str) -> String {
    name.to_shouty_snake_case()
}

/// The name of tonic's server trait for a proto service (`Greeter`; `Self` -> `Self_`).
pub fn tonic_server_trait(service: &str) -> String {
    sanitize(&upper_camel(service))
}

/// The name of tonic's server module for a proto service (`greeter_server`),
/// using tonic's own naive snake casing of the server trait name.
pub fn tonic_server_module(service: &str) -> String {
    let name = tonic_server_trait(service);
    let mut out = String::new();
    let mut chars = name.chars().peekable();
    while let Some(c) = chars.next() {
        out.push(c.to_ascii_lowercase());
        if chars.peek().is_some_and(|next| next.is_uppercase()) {
            out.push('_');
        }
    }
    out.push_str("_server");
    out
}

/// The name of tonic's client module for a proto service (`greeter_client`).
pub fn tonic_client_module(service: &str) -> String {
    let server = tonic_server_module(service);
    match server.strip_suffix("_server") {
        Some(stem) => format!("{stem}_client"),
        None => server,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keywords_are_escaped() {
        assert_eq!(sanitize("type"), "r#type");
        assert_eq!(sanitize("Self"), "Self_");
        assert_eq!(sanitize("self"), "self_");
        assert_eq!(sanitize("crate"), "crate_");
        assert_eq!(sanitize("super"), "super_");
        assert_eq!(sanitize("Greeter"), "Greeter");
    }

    #[test]
    fn tonic_names() {
        assert_eq!(tonic_server_trait("Greeter"), "Greeter");
        assert_eq!(tonic_server_module("Greeter"), "greeter_server");
        assert_eq!(tonic_client_module("Greeter"), "greeter_client");
        assert_eq!(tonic_server_module("HTTPService"), "http_service_server");
        assert_eq!(tonic_server_trait("Self"), "Self_");
        assert_eq!(tonic_server_module("Self"), "self__server");
        assert_eq!(proto_snake("SayHello"), "say_hello");
        assert_eq!(shouty_snake("Greeter"), "GREETER");
    }
}
