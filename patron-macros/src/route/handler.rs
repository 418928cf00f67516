//! Checks the annotated function and extracts what code generation needs:
//! its name, argument types (and which are `Dep<T>`) and return type.

use syn::{ItemFn, ReturnType, Type};

use crate::sig::{self, Kind};

const KIND: Kind = Kind {
    noun: "route handlers",
    generic_hint: ": axum needs one concrete handler type; remove the generic parameters",
    impl_trait_hint: ": name a concrete extractor type",
    too_many_hint: "; group some into a struct extractor",
};

pub struct Handler {
    pub name: syn::Ident,
    pub args: Vec<Type>,
    pub deps: Vec<Type>,
    pub output: Option<Type>,
}

/// The signature checks alone, for when the attribute did not parse.
fn check_signature(func: &ItemFn) -> syn::Result<()> {
    sig::check(&func.sig, &KIND)
}

impl Handler {
    pub fn analyse(func: &ItemFn) -> syn::Result<Self> {
        check_signature(func)?;
        let sig = &func.sig;
        let args = sig::arg_types(sig);
        let output = match &sig.output {
            ReturnType::Default => None,
            ReturnType::Type(_, ty) => Some((**ty).clone()),
        };
        Ok(Handler {
            name: sig.ident.clone(),
            deps: args.iter().filter_map(sig::dep_inner).collect(),
            args,
            output,
        })
    }
}

/// Whether a type mentions `impl Trait` anywhere (such return types cannot
/// appear in a where clause check).
pub fn contains_impl_trait(ty: &Type) -> bool {
    let text = quote::ToTokens::to_token_stream(ty).to_string();
    text.split(|c: char| !c.is_alphanumeric() && c != '_')
        .any(|w| w == "impl")
}
