//! What every patron attribute on a function shares: applying it (the
//! function is kept as written, with the errors beside it so the rest of
//! the crate still type-checks) and the checks on the handler's signature —
//! async, not generic, no `where`, not variadic, no `self`, no
//! `impl Trait` arguments — each reported on its token, all at once.

use proc_macro2::TokenStream;
use quote::quote;
use syn::spanned::Spanned;
use syn::{FnArg, ItemFn, Signature, Type};

/// Parses `item` as a function and hands it to `generate`; on failure the
/// errors are emitted beside the untouched item. `usage` is the message
/// for an attribute put on something other than a function.
pub fn expand(
    item: TokenStream,
    usage: &str,
    generate: impl FnOnce(&ItemFn) -> syn::Result<TokenStream>,
) -> TokenStream {
    let func: ItemFn = match syn::parse2(item.clone()) {
        Ok(f) => f,
        Err(_) => {
            let err = syn::Error::new(proc_macro2::Span::call_site(), usage).to_compile_error();
            return quote! { #err #item };
        }
    };
    match generate(&func) {
        Ok(tokens) => tokens,
        Err(err) => {
            let err = err.to_compile_error();
            quote! { #err #func }
        }
    }
}

/// How the messages name a kind of handler and what to suggest.
pub struct Kind {
    /// "route handlers", "consumer handlers".
    pub noun: &'static str,
    /// After "cannot be generic".
    pub generic_hint: &'static str,
    /// After "arguments cannot be `impl Trait`".
    pub impl_trait_hint: &'static str,
    /// After "take at most 16 arguments".
    pub too_many_hint: &'static str,
    /// Argument types (by last path segment) that are taken by value, so a
    /// reference to one is fixed by dropping the `&`.
    pub by_value: &'static [&'static str],
}

/// Every signature problem of `sig`, combined.
pub fn check(sig: &Signature, kind: &Kind) -> syn::Result<()> {
    let noun = kind.noun;
    let mut errors = Errors::default();
    if sig.asyncness.is_none() {
        errors.push(syn::Error::new(
            sig.fn_token.span(),
            format!("{noun} must be `async fn`: add `async` before `fn`"),
        ));
    }
    if let Some(param) = sig.generics.params.first() {
        errors.push(syn::Error::new(
            param.span(),
            format!("{noun} cannot be generic{}", kind.generic_hint),
        ));
    }
    if let Some(clause) = &sig.generics.where_clause {
        errors.push(syn::Error::new(
            clause.span(),
            format!("{noun} cannot have a `where` clause; use concrete types"),
        ));
    }
    if let Some(variadic) = &sig.variadic {
        errors.push(syn::Error::new(
            variadic.span(),
            format!("{noun} cannot be variadic"),
        ));
    }
    for input in &sig.inputs {
        match input {
            FnArg::Receiver(recv) => errors.push(syn::Error::new(
                recv.self_token.span,
                format!(
                    "{noun} cannot take `self`: make the handler a free function and take state as `Dep<T>`"
                ),
            )),
            FnArg::Typed(pat) => {
                if let Type::Reference(reference) = &*pat.ty {
                    errors.push(reference_error(reference, kind));
                }
                if let Type::ImplTrait(imp) = &*pat.ty {
                    errors.push(syn::Error::new(
                        imp.span(),
                        format!(
                            "{} arguments cannot be `impl Trait`{}",
                            noun.trim_end_matches('s'),
                            kind.impl_trait_hint
                        ),
                    ));
                }
            }
        }
    }
    if sig.inputs.len() > 16 {
        errors.push(syn::Error::new(
            sig.inputs.span(),
            format!("{noun} take at most 16 arguments{}", kind.too_many_hint),
        ));
    }
    errors.finish()
}

/// Why a handler cannot take `reference`, and what to take instead: the
/// type by value when it is an argument type of its own, else a `Dep`.
fn reference_error(reference: &syn::TypeReference, kind: &Kind) -> syn::Error {
    let inner = type_text(&reference.elem);
    let taken = format!(
        "{} cannot take references: `{}` would borrow from outside the handler",
        kind.noun,
        type_text(&Type::Reference(reference.clone()))
    );
    let by_value =
        last_segment(&reference.elem).is_some_and(|n| kind.by_value.contains(&n.as_str()));
    let fix = if by_value {
        format!("take `{inner}` by value")
    } else {
        format!(
            "take `Dep<{inner}>` and `provide` a `{inner}` in `#[patron::main]` (`service.provide(value)`)"
        )
    };
    syn::Error::new_spanned(reference, format!("{taken}; {fix}"))
}

/// Errors collected across arguments and checks, reported as one
/// (`syn::Error::combine`), so a user sees every mistake at once.
#[derive(Default)]
pub struct Errors(Option<syn::Error>);

impl Errors {
    pub fn push(&mut self, e: syn::Error) {
        match &mut self.0 {
            Some(all) => all.combine(e),
            None => self.0 = Some(e),
        }
    }

    /// All the errors so far and `e`.
    pub fn and(self, e: syn::Error) -> syn::Error {
        match self.0 {
            Some(mut all) => {
                all.combine(e);
                all
            }
            None => e,
        }
    }

    pub fn finish(self) -> syn::Result<()> {
        self.0.map_or(Ok(()), Err)
    }
}

/// The argument types of `sig` (after `check` passed: no receivers).
pub fn arg_types(sig: &Signature) -> Vec<Type> {
    sig.inputs
        .iter()
        .filter_map(|input| match input {
            FnArg::Typed(pat) => Some((*pat.ty).clone()),
            FnArg::Receiver(_) => None,
        })
        .collect()
}

/// `T` for an argument typed `Dep<T>` (any path ending in `Dep`).
pub fn dep_inner(ty: &Type) -> Option<Type> {
    let Type::Path(path) = ty else { return None };
    let last = path.path.segments.last()?;
    if last.ident != "Dep" {
        return None;
    }
    let syn::PathArguments::AngleBracketed(args) = &last.arguments else {
        return None;
    };
    match args.args.first()? {
        syn::GenericArgument::Type(inner) if args.args.len() == 1 => Some(inner.clone()),
        _ => None,
    }
}

/// The last path segment's name of a type (`Message` for
/// `patron::consumer::Message<T>`).
pub fn last_segment(ty: &Type) -> Option<String> {
    match ty {
        Type::Path(p) => p.path.segments.last().map(|s| s.ident.to_string()),
        _ => None,
    }
}

/// A type as a user would write it (`Vec<u8>`, not `Vec < u8 >`).
pub fn type_text(ty: &Type) -> String {
    quote!(#ty)
        .to_string()
        .replace(" :: ", "::")
        .replace(":: ", "::")
        .replace(" <", "<")
        .replace("< ", "<")
        .replace(" >", ">")
        .replace(" ,", ",")
        .replace("& ", "&")
}
