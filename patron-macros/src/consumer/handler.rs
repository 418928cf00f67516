//! Checks a consumer handler and extracts what code generation needs: its
//! name, argument types, which one is the message and which are `Dep<T>`.

use syn::spanned::Spanned;
use syn::{ItemFn, Type};

use crate::sig::{self, Errors, Kind};

const KIND: Kind = Kind {
    noun: "consumer handlers",
    generic_hint: "; use concrete types",
    impl_trait_hint: "; take `Message<T>` and `Dep<T>`",
    too_many_hint: "",
    by_value: &["Message", "Batch", "Dep"],
};

/// What code generation needs from the handler.
pub struct Handler {
    pub name: syn::Ident,
    pub args: Vec<Type>,
    /// Index of the `Message<T>` / `Batch<T>` argument.
    pub message: usize,
    pub deps: Vec<Type>,
}

/// The signature checks alone, for when the attribute did not parse.
pub fn check_signature(func: &ItemFn) -> syn::Result<()> {
    sig::check(&func.sig, &KIND)
}

impl Handler {
    /// Checks `func` for a consumer whose attribute does (`batch`) or does
    /// not take batches, of a broker that can batch (`batches`: not SQS);
    /// every problem at once.
    pub fn analyse(func: &ItemFn, batch: bool, batches: bool) -> syn::Result<Self> {
        let sig = &func.sig;
        let args = sig::arg_types(sig);
        let mut errors = Errors::default();
        if let Err(e) = check_signature(func) {
            errors.push(e);
        }
        let mut message = None;
        for (i, ty) in args.iter().enumerate() {
            match sig::last_segment(ty).as_deref() {
                Some("Message") if batch => errors.push(syn::Error::new(
                    ty.span(),
                    "with `batch = N` the handler takes `Batch<T>`, e.g. `batch: Batch<Json<Order>>`",
                )),
                Some("Batch") if !batches => errors.push(syn::Error::new(
                    ty.span(),
                    "SQS consumers take one message at a time: take `msg: Message<T>` instead of `Batch<T>`",
                )),
                Some("Batch") if !batch => errors.push(syn::Error::new(
                    ty.span(),
                    "a handler taking `Batch<T>` needs `batch = N` in the attribute, e.g. `batch = 100, batch_timeout = \"1s\"`",
                )),
                Some("Message") | Some("Batch") if message.is_some() => {
                    errors.push(syn::Error::new(
                        ty.span(),
                        "a consumer handler takes the message once; remove this argument",
                    ))
                }
                Some("Message") | Some("Batch") => message = Some(i),
                _ => {}
            }
        }
        errors.finish()?;
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
        Ok(Handler {
            name: sig.ident.clone(),
            deps: args.iter().filter_map(sig::dep_inner).collect(),
            args,
            message,
        })
    }
}
