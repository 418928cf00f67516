//! `#[patron::grpc(key = value, …)]` on the `impl` of a tonic-generated
//! service trait: keys `auth`, `timeout` and `descriptor`. It leaves the
//! `impl` as written and registers the service (the tonic server of the
//! implementing type, taken from the service's provided values) through
//! `inventory`.

use proc_macro2::TokenStream;
use quote::{ToTokens, format_ident, quote, quote_spanned};
use syn::parse::{Parse, ParseStream};
use syn::spanned::Spanned;
use syn::{ItemImpl, LitStr};

use crate::{args, units};

const KEYS: &[&str] = &["auth", "timeout", "descriptor"];

/// What the attribute says.
struct GrpcAttr {
    auth: Option<syn::Type>,
    timeout_nanos: Option<u64>,
    descriptor: Option<syn::Expr>,
}

impl Parse for GrpcAttr {
    /// Goes on past a bad argument, so every mistake is reported at once.
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let mut attr = GrpcAttr {
            auth: None,
            timeout_nanos: None,
            descriptor: None,
        };
        let mut seen = Vec::new();
        let mut errors: Option<syn::Error> = None;
        let mut first = true;
        while !input.is_empty() {
            let parsed = attr.argument(input, first, &mut seen);
            first = false;
            match parsed {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => {
                    match &mut errors {
                        Some(all) => all.combine(e),
                        None => errors = Some(e),
                    }
                    args::skip_argument(input);
                }
            }
        }
        match errors {
            Some(e) => Err(e),
            None => Ok(attr),
        }
    }
}

impl GrpcAttr {
    /// One `key = value`; `false` at the end of the list.
    fn argument(
        &mut self,
        input: ParseStream,
        first: bool,
        seen: &mut Vec<String>,
    ) -> syn::Result<bool> {
        // The first key has no comma before it.
        let key = if first {
            let key: syn::Ident = input.call(syn::ext::IdentExt::parse_any)?;
            check_key(&key, seen)?;
            input
                .parse::<syn::Token![=]>()
                .map_err(|e| syn::Error::new(e.span(), format!("expected `=` after `{key}`")))?;
            key
        } else {
            match args::next_key(input, "grpc", KEYS, |_| None, seen)? {
                Some(key) => key,
                None => return Ok(false),
            }
        };
        match key.to_string().as_str() {
            "auth" => self.auth = Some(args::auth_type(input)?),
            "timeout" => {
                let lit: LitStr = args::string(input, "timeout", "\"2s\"")?;
                let nanos = units::parse_duration(&lit.value())
                    .map_err(|msg| syn::Error::new(lit.span(), msg))?;
                if nanos == 0 {
                    return Err(syn::Error::new(
                        lit.span(),
                        "`timeout` must be greater than zero; remove it to use the default",
                    ));
                }
                self.timeout_nanos = Some(nanos);
            }
            "descriptor" => self.descriptor = Some(input.parse()?),
            _ => unreachable!("keys are checked against KEYS"),
        }
        Ok(true)
    }
}

/// The first key, checked as `args::next_key` checks the others.
fn check_key(key: &syn::Ident, seen: &mut Vec<String>) -> syn::Result<()> {
    let name = key.to_string();
    if !KEYS.contains(&name.as_str()) {
        let hint = match units::did_you_mean(&name, KEYS) {
            Some(s) => format!("did you mean `{s}`? "),
            None => String::new(),
        };
        return Err(syn::Error::new(
            key.span(),
            format!(
                "unknown grpc argument `{name}`; {hint}known arguments: {}",
                KEYS.join(", ")
            ),
        ));
    }
    seen.push(name);
    Ok(())
}

const WHERE: &str = "`#[patron::grpc]` goes on the `impl` of a tonic-generated service trait, such as `impl greeter_server::Greeter for MyGreeter`";

/// The tonic server type of the trait `path`: `a::greeter_server::Greeter`
/// → `a::greeter_server::GreeterServer`.
fn server_path(path: &syn::Path) -> syn::Result<syn::Path> {
    let segments: Vec<_> = path.segments.iter().collect();
    let Some(last) = segments.last() else {
        return Err(syn::Error::new(path.span(), WHERE));
    };
    if !last.arguments.is_empty() {
        return Err(syn::Error::new(
            last.arguments.span(),
            format!("{WHERE}; tonic's service traits take no generic arguments"),
        ));
    }
    if let [.., module, _] = segments.as_slice()
        && !module.ident.to_string().ends_with("_server")
    {
        return Err(syn::Error::new_spanned(
            path,
            format!(
                "{WHERE}; `{}` is not in a tonic `*_server` module",
                path.to_token_stream().to_string().replace(' ', "")
            ),
        ));
    }
    let mut server = path.clone();
    if let Some(last) = server.segments.last_mut() {
        last.ident = format_ident!("{}Server", last.ident);
    }
    Ok(server)
}

pub fn expand(attr: TokenStream, item: TokenStream) -> TokenStream {
    let parsed_attr = syn::parse2::<GrpcAttr>(attr);
    let item_impl = match syn::parse2::<ItemImpl>(item.clone()) {
        Ok(i) => i,
        Err(_) => {
            let span = item
                .into_iter()
                .next()
                .map_or_else(proc_macro2::Span::call_site, |t| t.span());
            let mut error = syn::Error::new(span, WHERE);
            if let Err(e) = parsed_attr {
                error.combine(e);
            }
            return error.to_compile_error();
        }
    };
    let server = match &item_impl.trait_ {
        None => Err(syn::Error::new(
            item_impl.self_ty.span(),
            format!("{WHERE}; this is an inherent `impl`, with no trait"),
        )),
        Some((Some(bang), _, _)) => Err(syn::Error::new(bang.span(), WHERE)),
        Some((None, path, _)) => server_path(path),
    };
    let generics = if item_impl.generics.params.is_empty() {
        Ok(())
    } else {
        Err(syn::Error::new(
            item_impl.generics.span(),
            "a generic `impl` cannot be registered with `#[patron::grpc]`: implement the trait for one concrete type, or give each instance to `Service::with_grpc`",
        ))
    };
    let mut errors: Option<syn::Error> = None;
    let mut note = |e: syn::Error| match &mut errors {
        Some(all) => all.combine(e),
        None => errors = Some(e),
    };
    let (attr, server) = match (parsed_attr, server, generics) {
        (Ok(a), Ok(s), Ok(())) => (a, s),
        (a, s, g) => {
            for e in [a.err(), s.err(), g.err()].into_iter().flatten() {
                note(e);
            }
            let errors = errors.map(|e| e.to_compile_error());
            return quote! { #item_impl #errors };
        }
    };
    generate(&attr, &server, &item_impl)
}

fn generate(attr: &GrpcAttr, server: &syn::Path, item: &ItemImpl) -> TokenStream {
    let p = quote!(::patron::__private);
    let ty = &item.self_ty;
    let type_name = ty.to_token_stream().to_string().replace(' ', "");
    let line = quote_spanned! {ty.span()=> ::core::line!() };
    let (auth_apply, auth_spec) = match &attr.auth {
        Some(auth) => {
            let auth_name = auth.to_token_stream().to_string().replace(' ', "");
            (
                quote_spanned! {auth.span()=>
                    let service = service.auth_arc::<#auth>(deps.get::<#auth>()?);
                },
                quote! {
                    ::core::option::Option::Some(#p::AuthSpec {
                        type_name: #auth_name,
                        type_id: ::core::any::TypeId::of::<#auth>,
                    })
                },
            )
        }
        None => (quote!(), quote!(::core::option::Option::None)),
    };
    let timeout = attr.timeout_nanos.map(|n| {
        quote! { let service = service.timeout(::core::time::Duration::from_nanos(#n)); }
    });
    let descriptor = attr.descriptor.as_ref().map(|d| {
        quote_spanned! {d.span()=> let service = service.descriptor(#d); }
    });
    let server_ty = quote_spanned! {server.span()=> #server<#ty> };
    quote! {
        #item

        ::patron::__patron_require_grpc! {
        const _: () = {
            fn __patron_grpc_build(
                deps: &#p::Deps,
            ) -> ::core::option::Option<#p::GrpcService> {
                let service = #p::GrpcService::new(<#server_ty>::from_arc(deps.get::<#ty>()?));
                #auth_apply
                #timeout
                #descriptor
                ::core::option::Option::Some(service)
            }
            #p::inventory::submit! {
                #p::GrpcDef {
                    name: <#server_ty as #p::NamedService>::NAME,
                    implementation: #type_name,
                    file: ::core::file!(),
                    line: #line,
                    dep: #p::DepSpec {
                        type_name: #type_name,
                        type_id: ::core::any::TypeId::of::<#ty>,
                    },
                    auth: #auth_spec,
                    build: __patron_grpc_build,
                }
            }
        };
        }
    }
}
