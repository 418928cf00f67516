//! Checks the annotated function and extracts what code generation needs:
//! its name, argument types (and which are `Dep<T>`) and return type.

use syn::{ItemFn, ReturnType, Type};

use crate::sig::{self, Kind};

const KIND: Kind = Kind {
    noun: "route handlers",
    generic_hint: ": axum needs one concrete handler type; remove the generic parameters",
    impl_trait_hint: ": name a concrete extractor type",
    too_many_hint: "; group some into a struct extractor",
    by_value: &[
        "Path",
        "Query",
        "HeaderMap",
        "Json",
        "String",
        "Bytes",
        "Form",
        "RawForm",
        "Request",
        "Method",
        "Uri",
        "CorrelationId",
        "Extension",
        "ConnectInfo",
        "MatchedPath",
        "OriginalUri",
        "Dep",
    ],
};

/// Extractors that consume the request body (axum's `FromRequest` types),
/// by their last path segment.
const BODY_EXTRACTORS: &[&str] = &[
    "Json",
    "String",
    "Bytes",
    "Form",
    "RawForm",
    "Request",
    "Multipart",
    "Body",
];

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
        let sig = &func.sig;
        let mut errors = sig::Errors::default();
        if let Err(e) = check_signature(func) {
            errors.push(e);
        }
        let args = sig::arg_types(sig);
        for ty in args.iter().take(args.len().saturating_sub(1)) {
            if sig::last_segment(ty).is_some_and(|name| BODY_EXTRACTORS.contains(&name.as_str())) {
                errors.push(syn::Error::new_spanned(
                    ty,
                    format!(
                        "`{}` reads the request body: the body extractor (`Json`, `String`, `Bytes`, `Form`, `Request`) must be the last argument",
                        sig::type_text(ty)
                    ),
                ));
            }
        }
        errors.finish()?;
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
