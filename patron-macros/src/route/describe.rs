//! The route's OpenAPI description: the attribute's doc keys, the
//! handler's doc comment, and a function that probes each argument type
//! and the return type (see `patron::http::describe`). A type without a
//! schema is reported on the user's own type token.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{GenericArgument, ItemFn, PathArguments, Type};

use super::handler::{Handler, contains_impl_trait};
use super::parse::RouteAttr;
use crate::sig;

/// The `RouteDef::doc` value: `None` for `openapi = false`, else the
/// `RouteDoc` with its describe function.
pub fn route_doc(attr: &RouteAttr, handler: &Handler, func: &ItemFn) -> TokenStream {
    let p = quote!(::patron::__private);
    if !attr.openapi {
        return quote!(::core::option::Option::None);
    }
    let (first, rest) = doc_comment(func);
    let (summary, description) = match &attr.summary {
        Some(lit) => (Some(lit.value()), join(first, rest)),
        None => (first, rest),
    };
    let summary = option(summary);
    let description = option(description);
    let tags = attr.tags.iter();
    let deprecated = attr.deprecated;

    // The probe is bound to a name spanned on the user's type: a missing
    // schema is reported on the receiver, i.e. on that type.
    let args = handler.args.iter().map(|ty| {
        let call = quote_spanned! {ty.span()=> __probe.describe_arg(__op); };
        quote! {{
            let __probe = #p::Probe::<#ty>::new();
            #call
        }}
    });
    let output = match &handler.output {
        None => quote!(#p::Probe::<()>::new().describe_output(__op, "200");),
        Some(ty) if contains_impl_trait(ty) => {
            quote!(#p::Undescribed::describe_output(&#p::Probe::<()>::new(), __op, "2XX");)
        }
        Some(ty) => {
            let (core, status) = success_type(ty);
            let call = quote_spanned! {core.span()=> __probe.describe_output(__op, #status); };
            quote! {{
                let __probe = #p::Probe::<#core>::new();
                #call
            }}
        }
    };
    quote! {
        ::core::option::Option::Some(#p::RouteDoc {
            summary: #summary,
            description: #description,
            tags: &[#(#tags),*],
            deprecated: #deprecated,
            describe: {
                #[allow(unused_imports, clippy::all)]
                fn __patron_describe(__op: &mut #p::Operation<'_>) {
                    use #p::Undescribed as _;
                    #(#args)*
                    #output
                }
                __patron_describe
            },
        })
    }
}

fn option(text: Option<String>) -> TokenStream {
    match text {
        Some(t) => quote!(::core::option::Option::Some(#t)),
        None => quote!(::core::option::Option::None),
    }
}

fn join(first: Option<String>, rest: Option<String>) -> Option<String> {
    match (first, rest) {
        (Some(f), Some(r)) => Some(format!("{f}\n\n{r}")),
        (f, r) => f.or(r),
    }
}

/// The handler's doc comment: its first paragraph as one line (the
/// summary), and the rest (the description).
fn doc_comment(func: &ItemFn) -> (Option<String>, Option<String>) {
    let lines: Vec<String> = func
        .attrs
        .iter()
        .filter(|a| a.path().is_ident("doc"))
        .filter_map(|a| match &a.meta {
            syn::Meta::NameValue(nv) => match &nv.value {
                syn::Expr::Lit(syn::ExprLit {
                    lit: syn::Lit::Str(s),
                    ..
                }) => Some(s.value()),
                _ => None,
            },
            _ => None,
        })
        .map(|line| {
            line.strip_prefix(' ')
                .unwrap_or(&line)
                .trim_end()
                .to_string()
        })
        .collect();
    let text = lines.join("\n");
    let text = text.trim();
    if text.is_empty() {
        return (None, None);
    }
    let (first, rest) = text.split_once("\n\n").unwrap_or((text, ""));
    let first = first.split_whitespace().collect::<Vec<_>>().join(" ");
    let rest = rest.trim();
    (Some(first), (!rest.is_empty()).then(|| rest.to_string()))
}

/// The type a successful call returns and the status it answers with:
/// `Result<T, E>` is `T`; a tuple `(…, T)` is `T`, at a status known only
/// at run time when the tuple holds a `StatusCode`; anything else `200`.
fn success_type(ty: &Type) -> (&Type, &'static str) {
    let mut ty = ty;
    if let Some(ok) = result_ok(ty) {
        ty = ok;
    }
    match ty {
        Type::Tuple(tuple) if tuple.elems.len() >= 2 => {
            let status_first = tuple
                .elems
                .iter()
                .rev()
                .skip(1)
                .any(|t| sig::last_segment(t).is_some_and(|name| name == "StatusCode"));
            match tuple.elems.last() {
                Some(last) => (last, if status_first { "2XX" } else { "200" }),
                None => (ty, "200"),
            }
        }
        Type::Paren(inner) => success_type(&inner.elem),
        _ => (ty, "200"),
    }
}

/// `T` of `Result<T, E>` (or of an alias such as `patron::Result<T>`).
fn result_ok(ty: &Type) -> Option<&Type> {
    let Type::Path(path) = ty else { return None };
    let last = path.path.segments.last()?;
    if last.ident != "Result" {
        return None;
    }
    let PathArguments::AngleBracketed(args) = &last.arguments else {
        return None;
    };
    args.args.iter().find_map(|a| match a {
        GenericArgument::Type(t) => Some(t),
        _ => None,
    })
}
