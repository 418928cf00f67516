//! `#[patron::consumer(amqp = "queue", key = value, …)]`: parse the
//! attribute, check the function, then emit the registration beside the
//! untouched function.

mod codegen;
mod parse;

use proc_macro2::TokenStream;
use quote::quote;
use syn::spanned::Spanned;
use syn::{FnArg, ItemFn, Type};

use crate::route::dep_inner;

pub fn expand(attr: TokenStream, item: TokenStream) -> TokenStream {
    let func: ItemFn = match syn::parse2(item.clone()) {
        Ok(f) => f,
        Err(_) => {
            let err = syn::Error::new(
                proc_macro2::Span::call_site(),
                "`#[patron::consumer]` goes on an `async fn`, e.g. `#[patron::consumer(amqp = \"orders\")] async fn on_order(msg: Message<Json<Order>>) -> Result<(), patron::Error> { Ok(()) }`",
            )
            .to_compile_error();
            return quote! { #err #item };
        }
    };
    let result = syn::parse2::<parse::ConsumerAttr>(attr)
        .and_then(|attr| Handler::analyse(&func, attr.batch.is_some()).map(|h| (attr, h)))
        .map(|(attr, handler)| codegen::generate(&attr, &handler, &func));
    match result {
        Ok(tokens) => tokens,
        Err(err) => {
            let err = err.to_compile_error();
            quote! { #err #func }
        }
    }
}

/// What code generation needs from the handler.
pub struct Handler {
    pub name: syn::Ident,
    pub args: Vec<Type>,
    /// Index of the `Message<T>` / `Batch<T>` argument.
    pub message: usize,
    pub deps: Vec<Type>,
}

impl Handler {
    fn analyse(func: &ItemFn, batch: bool) -> syn::Result<Self> {
        let sig = &func.sig;
        if sig.asyncness.is_none() {
            return Err(syn::Error::new(
                sig.fn_token.span(),
                "consumer handlers must be `async fn`: add `async` before `fn`",
            ));
        }
        if let Some(param) = sig.generics.params.first() {
            return Err(syn::Error::new(
                param.span(),
                "consumer handlers cannot be generic; use concrete types",
            ));
        }
        if let Some(clause) = &sig.generics.where_clause {
            return Err(syn::Error::new(
                clause.span(),
                "consumer handlers cannot have a `where` clause; use concrete types",
            ));
        }
        let mut args = Vec::new();
        let mut deps = Vec::new();
        let mut message = None;
        for input in &sig.inputs {
            let ty = match input {
                FnArg::Receiver(recv) => {
                    return Err(syn::Error::new(
                        recv.self_token.span,
                        "consumer handlers cannot take `self`: make the handler a free function and take state as `Dep<T>`",
                    ));
                }
                FnArg::Typed(pat) => &*pat.ty,
            };
            if let Type::ImplTrait(imp) = ty {
                return Err(syn::Error::new(
                    imp.span(),
                    "consumer handler arguments cannot be `impl Trait`; take `Message<T>` and `Dep<T>`",
                ));
            }
            let last = last_segment(ty);
            match last.as_deref() {
                Some("Message") if batch => {
                    return Err(syn::Error::new(
                        ty.span(),
                        "with `batch = N` the handler takes `Batch<T>`, e.g. `batch: Batch<Json<Order>>`",
                    ));
                }
                Some("Batch") if !batch => {
                    return Err(syn::Error::new(
                        ty.span(),
                        "a handler taking `Batch<T>` needs `batch = N` in the attribute, e.g. `batch = 100, batch_timeout = \"1s\"`",
                    ));
                }
                Some("Message") | Some("Batch") => {
                    if message.is_some() {
                        return Err(syn::Error::new(
                            ty.span(),
                            "a consumer handler takes the message once; remove this argument",
                        ));
                    }
                    message = Some(args.len());
                }
                Some("Dep") => {
                    if let Some(inner) = dep_inner(ty) {
                        deps.push(inner);
                    }
                }
                _ => {}
            }
            args.push(ty.clone());
        }
        let Some(message) = message else {
            let what = if batch {
                "`batch: Batch<Json<Order>>`"
            } else {
                "`msg: Message<Json<Order>>` (or `Message<String>`, `Message<Bytes>`)"
            };
            return Err(syn::Error::new(
                sig.inputs
                    .span()
                    .join(sig.paren_token.span.join())
                    .unwrap_or(sig.ident.span()),
                format!("a consumer handler takes the message: add an argument such as {what}"),
            ));
        };
        if args.len() > 16 {
            return Err(syn::Error::new(
                sig.inputs.span(),
                "consumer handlers take at most 16 arguments",
            ));
        }
        Ok(Handler {
            name: sig.ident.clone(),
            args,
            message,
            deps,
        })
    }
}

fn last_segment(ty: &Type) -> Option<String> {
    match ty {
        Type::Path(p) => p.path.segments.last().map(|s| s.ident.to_string()),
        _ => None,
    }
}
