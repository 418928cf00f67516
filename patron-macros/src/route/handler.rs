//! Checks the annotated function and extracts what code generation needs:
//! its name, argument types (and which are `Dep<T>`) and return type.

use syn::spanned::Spanned;
use syn::{FnArg, ItemFn, ReturnType, Type};

pub struct Handler {
    pub name: syn::Ident,
    pub args: Vec<Type>,
    pub deps: Vec<Type>,
    pub output: Option<Type>,
}

impl Handler {
    pub fn analyse(func: &ItemFn) -> syn::Result<Self> {
        let sig = &func.sig;
        if sig.asyncness.is_none() {
            return Err(syn::Error::new(
                sig.fn_token.span(),
                "route handlers must be `async fn`: add `async` before `fn`",
            ));
        }
        if let Some(param) = sig.generics.params.first() {
            return Err(syn::Error::new(
                param.span(),
                "route handlers cannot be generic: axum needs one concrete handler type; remove the generic parameters",
            ));
        }
        if let Some(clause) = &sig.generics.where_clause {
            return Err(syn::Error::new(
                clause.span(),
                "route handlers cannot have a `where` clause; use concrete types",
            ));
        }
        if let Some(variadic) = &sig.variadic {
            return Err(syn::Error::new(
                variadic.span(),
                "route handlers cannot be variadic",
            ));
        }
        let mut args = Vec::new();
        let mut deps = Vec::new();
        for input in &sig.inputs {
            match input {
                FnArg::Receiver(recv) => {
                    return Err(syn::Error::new(
                        recv.self_token.span,
                        "route handlers cannot take `self`: make the handler a free function and take state as `Dep<T>`",
                    ));
                }
                FnArg::Typed(pat) => {
                    if let Type::ImplTrait(imp) = &*pat.ty {
                        return Err(syn::Error::new(
                            imp.span(),
                            "route handler arguments cannot be `impl Trait`: name a concrete extractor type",
                        ));
                    }
                    if let Some(inner) = dep_inner(&pat.ty) {
                        deps.push(inner);
                    }
                    args.push((*pat.ty).clone());
                }
            }
        }
        if args.len() > 16 {
            return Err(syn::Error::new(
                sig.inputs.span(),
                "route handlers take at most 16 arguments; group some into a struct extractor",
            ));
        }
        let output = match &sig.output {
            ReturnType::Default => None,
            ReturnType::Type(_, ty) => Some((**ty).clone()),
        };
        Ok(Handler {
            name: sig.ident.clone(),
            args,
            deps,
            output,
        })
    }
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

/// Whether a type mentions `impl Trait` anywhere (such return types cannot
/// appear in a where clause check).
pub fn contains_impl_trait(ty: &Type) -> bool {
    let text = quote::ToTokens::to_token_stream(ty).to_string();
    text.split(|c: char| !c.is_alphanumeric() && c != '_')
        .any(|w| w == "impl")
}
