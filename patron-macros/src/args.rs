//! The `key = value` argument list every attribute shares: the comma
//! between arguments, a known key (with a "did you mean" for a typo), no
//! key twice, the `=`, and string-literal values.

use syn::parse::ParseStream;
use syn::spanned::Spanned;
use syn::{Ident, LitStr, Token};

use crate::units;

/// The next argument's key, after its comma and up to and including its
/// `=`; `None` at the end (a trailing comma is fine). `what` names the
/// attribute in messages ("route", "consumer"); `reject` may refuse a key
/// before the known-key check with its own message; `seen` collects keys to
/// refuse repeats.
pub fn next_key(
    input: ParseStream,
    what: &str,
    known: &[&str],
    reject: impl Fn(&str) -> Option<String>,
    seen: &mut Vec<String>,
) -> syn::Result<Option<Ident>> {
    if input.is_empty() {
        return Ok(None);
    }
    input
        .parse::<Token![,]>()
        .map_err(|e| syn::Error::new(e.span(), format!("expected `,` between {what} arguments")))?;
    if input.is_empty() {
        return Ok(None);
    }
    let key: Ident = input.call(syn::ext::IdentExt::parse_any).map_err(|e| {
        syn::Error::new(
            e.span(),
            format!(
                "expected a `key = value` argument; known keys: {}",
                known.join(", ")
            ),
        )
    })?;
    let name = key.to_string();
    if let Some(message) = reject(&name) {
        return Err(syn::Error::new(key.span(), message));
    }
    if !known.contains(&name.as_str()) {
        let hint = match units::did_you_mean(&name, known) {
            Some(s) => format!("did you mean `{s}`? "),
            None => String::new(),
        };
        return Err(syn::Error::new(
            key.span(),
            format!(
                "unknown {what} argument `{name}`; {hint}known arguments: {}",
                known.join(", ")
            ),
        ));
    }
    if seen.contains(&name) {
        return Err(syn::Error::new(
            key.span(),
            format!("`{name}` is specified more than once; keep one"),
        ));
    }
    seen.push(name.clone());
    input
        .parse::<Token![=]>()
        .map_err(|e| syn::Error::new(e.span(), format!("expected `=` after `{name}`")))?;
    Ok(Some(key))
}

/// A string-literal value, or an error showing `key = example`.
pub fn string(input: ParseStream, key: &str, example: &str) -> syn::Result<LitStr> {
    if input.peek(LitStr) {
        return input.parse();
    }
    let value: syn::Expr = input.parse()?;
    Err(syn::Error::new(
        value.span(),
        format!("`{key}` takes a string literal, e.g. `{key} = {example}`"),
    ))
}

/// Skips what is left of a malformed argument, up to its comma.
pub fn skip_argument(input: ParseStream) {
    while !input.is_empty() && !input.peek(syn::Token![,]) {
        if input.parse::<proc_macro2::TokenTree>().is_err() {
            break;
        }
    }
}

/// The `auth = T` value: a type name (not a string, not a qualified path).
pub fn auth_type(input: ParseStream) -> syn::Result<syn::Type> {
    if input.peek(syn::LitStr) {
        let lit: syn::LitStr = input.parse()?;
        return Err(syn::Error::new(
            lit.span(),
            format!(
                "`auth` takes a type, not a string: write `auth = {}`",
                lit.value()
            ),
        ));
    }
    let ty: syn::Type = input.parse().map_err(|e| {
        syn::Error::new(
            e.span(),
            "`auth` takes a type that implements `patron::http::Authenticator`, e.g. `auth = ApiKey`",
        )
    })?;
    match &ty {
        syn::Type::Path(p) if p.qself.is_none() => Ok(ty),
        other => Err(syn::Error::new(
            other.span(),
            "`auth` takes a type name that implements `patron::http::Authenticator`, e.g. `auth = ApiKey`",
        )),
    }
}
