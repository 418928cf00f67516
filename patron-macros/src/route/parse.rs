//! The attribute grammar:
//! `METHOD "/path" (, key = value)*` with keys `auth`, `middleware`, `trace`,
//! `timeout`, `body_limit`, `rate_limit` and `cache`, and the OpenAPI keys
//! `openapi`, `summary`, `tags` and `deprecated`.

use proc_macro2::Span;
use syn::parse::{Parse, ParseStream};
use syn::spanned::Spanned;
use syn::{Ident, LitBool, LitStr, Token};

use crate::{args, units};

pub const METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];
const KEYS: &[&str] = &[
    "auth",
    "middleware",
    "trace",
    "timeout",
    "body_limit",
    "rate_limit",
    "cache",
    "openapi",
    "summary",
    "tags",
    "deprecated",
];

pub struct RouteAttr {
    pub method: Ident,
    pub path: LitStr,
    pub auth: Option<syn::Type>,
    pub middleware: Vec<syn::Path>,
    pub trace: bool,
    pub timeout_nanos: Option<u64>,
    pub body_limit: Option<u64>,
    /// `cache = "1m"`: the freshness lifetime in nanoseconds.
    pub cache_nanos: Option<u64>,
    /// `(count, per nanoseconds)`.
    pub rate_limit: Option<(u32, u64)>,
    /// `openapi = false` leaves the route out of the OpenAPI document.
    pub openapi: bool,
    /// `summary = "…"`: the operation's summary.
    pub summary: Option<LitStr>,
    /// `tags = ["…", …]`: the operation's tags.
    pub tags: Vec<LitStr>,
    /// `deprecated = true`: the operation is marked deprecated.
    pub deprecated: bool,
}

impl Parse for RouteAttr {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        if input.is_empty() {
            return Err(syn::Error::new(
                Span::call_site(),
                "missing HTTP method and path: write `#[patron::route(GET \"/index\")]`",
            ));
        }
        if input.peek(LitStr) {
            let lit: LitStr = input.parse()?;
            return Err(syn::Error::new(
                lit.span(),
                format!(
                    "missing HTTP method before the path: write `#[patron::route(GET {:?})]`",
                    lit.value()
                ),
            ));
        }
        let method: Ident = input.parse().map_err(|e| {
            syn::Error::new(
                e.span(),
                "expected an HTTP method (GET, POST, PUT, PATCH, DELETE, HEAD or OPTIONS) followed by a path string",
            )
        })?;
        check_method(&method)?;
        if input.is_empty() || input.peek(Token![,]) {
            return Err(syn::Error::new(
                method.span(),
                format!(
                    "missing path after `{method}`: write `#[patron::route({method} \"/index\")]`"
                ),
            ));
        }
        let path: LitStr = input.parse().map_err(|e| {
            syn::Error::new(
                e.span(),
                "the path must be a string literal that starts with `/`, e.g. \"/users/{id}\"",
            )
        })?;
        check_path(&path)?;

        let mut attr = RouteAttr {
            method,
            path,
            auth: None,
            middleware: Vec::new(),
            trace: true,
            timeout_nanos: None,
            body_limit: None,
            rate_limit: None,
            cache_nanos: None,
            openapi: true,
            summary: None,
            tags: Vec::new(),
            deprecated: false,
        };
        let mut seen: Vec<String> = Vec::new();
        while let Some(key) = args::next_key(input, "route", KEYS, |_| None, &mut seen)? {
            let name = key.to_string();
            match name.as_str() {
                "auth" => attr.auth = Some(args::auth_type(input)?),
                "middleware" => attr.middleware = parse_middleware(input)?,
                "trace" => attr.trace = boolean(input, "trace")?,
                "openapi" => attr.openapi = boolean(input, "openapi")?,
                "deprecated" => attr.deprecated = boolean(input, "deprecated")?,
                "summary" => {
                    let lit = args::string(input, "summary", "\"Place an order\"")?;
                    if lit.value().trim().is_empty() {
                        return Err(syn::Error::new(
                            lit.span(),
                            "`summary` is empty; write a short sentence or remove it",
                        ));
                    }
                    attr.summary = Some(lit);
                }
                "tags" => attr.tags = parse_tags(input)?,
                "timeout" => {
                    let lit = args::string(input, "timeout", "\"2s\"")?;
                    let nanos = units::parse_duration(&lit.value())
                        .map_err(|msg| syn::Error::new(lit.span(), msg))?;
                    if nanos == 0 {
                        return Err(syn::Error::new(
                            lit.span(),
                            "`timeout` must be greater than zero; remove it to use the default",
                        ));
                    }
                    attr.timeout_nanos = Some(nanos);
                }
                "body_limit" => {
                    let lit = args::string(input, "body_limit", "\"1MiB\"")?;
                    let bytes = units::parse_size(&lit.value())
                        .map_err(|msg| syn::Error::new(lit.span(), msg))?;
                    if bytes == 0 {
                        return Err(syn::Error::new(
                            lit.span(),
                            "`body_limit` must be greater than zero",
                        ));
                    }
                    attr.body_limit = Some(bytes);
                }
                "cache" => {
                    let lit = args::string(input, "cache", "\"1m\"")?;
                    if attr.method != "GET" {
                        return Err(syn::Error::new(
                            lit.span(),
                            format!(
                                "`cache` applies to GET routes only (HEAD is answered from the same entry); `{}` responses are not cacheable",
                                attr.method
                            ),
                        ));
                    }
                    let nanos = units::parse_duration(&lit.value())
                        .map_err(|msg| syn::Error::new(lit.span(), msg))?;
                    if nanos < 1_000_000_000 {
                        return Err(syn::Error::new(
                            lit.span(),
                            "`cache` takes a freshness lifetime of at least one second, e.g. \"30s\" or \"5m\"",
                        ));
                    }
                    attr.cache_nanos = Some(nanos);
                }
                "rate_limit" => {
                    let lit = args::string(input, "rate_limit", "\"100/s\"")?;
                    attr.rate_limit = Some(
                        units::parse_rate(&lit.value())
                            .map_err(|msg| syn::Error::new(lit.span(), msg))?,
                    );
                }
                _ => unreachable!("keys are checked against KEYS above"),
            }
        }
        if !attr.openapi
            && let Some(key) = ["summary", "tags", "deprecated"]
                .into_iter()
                .find(|k| seen.iter().any(|s| s == k))
        {
            return Err(syn::Error::new(
                Span::call_site(),
                format!(
                    "`{key}` describes the route in the OpenAPI document, but `openapi = false` leaves it out; remove one of them"
                ),
            ));
        }
        Ok(attr)
    }
}

fn check_method(method: &Ident) -> syn::Result<()> {
    let name = method.to_string();
    if METHODS.contains(&name.as_str()) {
        return Ok(());
    }
    let upper = name.to_ascii_uppercase();
    if METHODS.contains(&upper.as_str()) {
        return Err(syn::Error::new(
            method.span(),
            format!("HTTP methods are written in upper case: use `{upper}` instead of `{name}`"),
        ));
    }
    let hint = match units::did_you_mean(&upper, METHODS) {
        Some(s) => format!("did you mean `{s}`? "),
        None => String::new(),
    };
    Err(syn::Error::new(
        method.span(),
        format!(
            "unknown HTTP method `{name}`; {hint}expected one of {}",
            METHODS.join(", ")
        ),
    ))
}

fn check_path(lit: &LitStr) -> syn::Result<()> {
    let path = lit.value();
    let err = |msg: String| Err(syn::Error::new(lit.span(), msg));
    if !path.starts_with('/') {
        return err(format!("route paths start with `/`: write \"/{path}\""));
    }
    let mut names: Vec<String> = Vec::new();
    let segments: Vec<&str> = path[1..].split('/').collect();
    for (index, segment) in segments.iter().enumerate() {
        if let Some(name) = segment.strip_prefix(':') {
            return err(format!(
                "path parameter `:{name}` uses the old syntax; write `{{{name}}}` instead"
            ));
        }
        let mut rest = *segment;
        while let Some(open) = rest.find(['{', '}']) {
            if rest.as_bytes()[open] == b'}' {
                return err(format!(
                    "unmatched `}}` in path segment `{segment}`; parameters look like `{{id}}`"
                ));
            }
            let after = &rest[open + 1..];
            let Some(close) = after.find('}') else {
                return err(format!(
                    "unclosed `{{` in path segment `{segment}`; parameters look like `{{id}}`"
                ));
            };
            let inner = &after[..close];
            let (wildcard, name) = match inner.strip_prefix('*') {
                Some(n) => (true, n),
                None => (false, inner),
            };
            if name.is_empty() {
                return err(format!(
                    "empty path parameter `{{{inner}}}` in `{segment}`; give it a name, e.g. `{{id}}`"
                ));
            }
            if !name
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                return err(format!(
                    "invalid path parameter name `{name}`: use letters, digits and `_`, starting with a letter"
                ));
            }
            if after[..close].contains('{') {
                return err(format!("nested `{{` in path segment `{segment}`"));
            }
            if wildcard && (index + 1 != segments.len() || close + 1 != after.len()) {
                return err(format!(
                    "the catch-all parameter `{{*{name}}}` must be the last part of the path"
                ));
            }
            if names.iter().any(|n| n == name) {
                return err(format!("path parameter `{name}` appears more than once"));
            }
            names.push(name.to_string());
            rest = &after[close + 1..];
        }
    }
    Ok(())
}

fn boolean(input: ParseStream, key: &str) -> syn::Result<bool> {
    let value: LitBool = input
        .parse()
        .map_err(|e| syn::Error::new(e.span(), format!("`{key}` takes `true` or `false`")))?;
    Ok(value.value)
}

fn parse_tags(input: ParseStream) -> syn::Result<Vec<LitStr>> {
    let usage = "`tags` takes a list of strings: write `tags = [\"orders\"]`";
    if !input.peek(syn::token::Bracket) {
        let value: syn::Expr = input.parse()?;
        return Err(syn::Error::new(value.span(), usage));
    }
    let content;
    let bracket = syn::bracketed!(content in input);
    let list = content
        .parse_terminated(|i| i.parse::<LitStr>(), Token![,])
        .map_err(|e| syn::Error::new(e.span(), usage))?;
    if list.is_empty() {
        return Err(syn::Error::new(
            bracket.span.join(),
            "`tags = []` is empty; list at least one tag or remove the argument",
        ));
    }
    let mut tags: Vec<LitStr> = Vec::new();
    for tag in list {
        if tag.value().trim().is_empty() {
            return Err(syn::Error::new(tag.span(), "a tag cannot be empty"));
        }
        if tags.iter().any(|t| t.value() == tag.value()) {
            return Err(syn::Error::new(
                tag.span(),
                format!("tag {:?} appears more than once", tag.value()),
            ));
        }
        tags.push(tag);
    }
    Ok(tags)
}

fn parse_middleware(input: ParseStream) -> syn::Result<Vec<syn::Path>> {
    if !input.peek(syn::token::Bracket) {
        let value: syn::Expr = input.parse()?;
        let shown = quote::ToTokens::to_token_stream(&value).to_string();
        return Err(syn::Error::new(
            value.span(),
            format!("`middleware` takes a list of functions: write `middleware = [{shown}]`"),
        ));
    }
    let content;
    let bracket = syn::bracketed!(content in input);
    let list = content.parse_terminated(syn::Path::parse_mod_style, Token![,])?;
    if list.is_empty() {
        return Err(syn::Error::new(
            bracket.span.join(),
            "`middleware = []` is empty; list at least one function or remove the argument",
        ));
    }
    Ok(list.into_iter().collect())
}
