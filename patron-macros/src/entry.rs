//! `#[patron::main]`: the service entry point. It accepts
//! `async fn main()` (optionally returning `patron::Result<()>`) and
//! `async fn main(service: Service) -> patron::Result<Service>`, and turns it
//! into a synchronous `fn main() -> ExitCode` that runs the service.

use proc_macro2::{Span, TokenStream};
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{FnArg, ItemFn, ReturnType};

pub fn expand(attr: TokenStream, item: TokenStream) -> TokenStream {
    let func: ItemFn = match syn::parse2(item.clone()) {
        Ok(f) => f,
        Err(_) => {
            let err = syn::Error::new(
                Span::call_site(),
                "`#[patron::main]` goes on `async fn main()` or `async fn main(service: patron::Service) -> patron::Result<patron::Service>`",
            )
            .to_compile_error();
            return quote! { #err #item };
        }
    };
    match generate(attr, &func) {
        Ok(tokens) => tokens,
        Err(err) => {
            // Keep the user's function (renamed, so it is not the entry point)
            // and a plain `main`, so the only error the user sees is ours.
            let err = err.to_compile_error();
            let vis = &func.vis;
            let ident = &func.sig.ident;
            let mut kept = func.clone();
            kept.sig.ident = syn::Ident::new("__patron_rejected_main", ident.span());
            quote! {
                #err
                #[allow(dead_code, unused)]
                #kept
                #vis fn #ident() {}
            }
        }
    }
}

fn generate(attr: TokenStream, func: &ItemFn) -> syn::Result<TokenStream> {
    if !attr.is_empty() {
        return Err(syn::Error::new(
            attr.span(),
            "`#[patron::main]` takes no arguments; configure the service in the body through `service`",
        ));
    }
    let sig = &func.sig;
    if sig.asyncness.is_none() {
        return Err(syn::Error::new(
            sig.fn_token.span(),
            "`#[patron::main]` goes on an `async fn`: add `async` before `fn`",
        ));
    }
    if let Some(param) = sig.generics.params.first() {
        return Err(syn::Error::new(
            param.span(),
            "`#[patron::main]` cannot be generic",
        ));
    }
    let inputs: Vec<&FnArg> = sig.inputs.iter().collect();
    if let Some(FnArg::Receiver(recv)) = inputs.first() {
        return Err(syn::Error::new(
            recv.span(),
            "`#[patron::main]` cannot take `self`",
        ));
    }
    if inputs.len() > 1 {
        return Err(syn::Error::new(
            inputs[1].span(),
            "`#[patron::main]` takes no argument or exactly one, `service: patron::Service`; remove this argument",
        ));
    }
    let p = quote!(::patron::__private);
    let attrs = &func.attrs;
    let vis = &func.vis;
    let ident = &sig.ident;
    let inputs_tokens = &sig.inputs;
    let output = &sig.output;
    let body = &func.block;
    let version_var = patron_units::defaults::BUILD_VERSION_VAR;
    let info = quote! {
        #p::MainInfo {
            name: match ::core::option_env!("CARGO_BIN_NAME") {
                ::core::option::Option::Some(n) => n,
                ::core::option::Option::None => ::core::env!("CARGO_PKG_NAME"),
            },
            // The version given at build time, as Go's `-ldflags -X`.
            version: match ::core::option_env!(#version_var) {
                ::core::option::Option::Some(v) if !v.is_empty() => v,
                _ => ::core::env!("CARGO_PKG_VERSION"),
            },
        }
    };
    let run = match inputs.first() {
        None => {
            let convert = match output {
                ReturnType::Default => {
                    quote!(::patron::MainOutput::into_result(
                        __patron_user_main().await
                    ))
                }
                ReturnType::Type(_, ty) => quote_spanned! {ty.span()=>
                    ::patron::MainOutput::into_result(__patron_user_main().await)
                },
            };
            quote! {
                #p::run_main(#info, || async move { #convert })
            }
        }
        Some(FnArg::Typed(arg)) => {
            let ReturnType::Type(_, ret) = output else {
                return Err(syn::Error::new(
                    sig.paren_token.span.close(),
                    "`async fn main(service: Service)` must return the configured service: add `-> patron::Result<patron::Service>` and end the body with `Ok(service)`",
                ));
            };
            let ty = &arg.ty;
            let call = quote_spanned! {ty.span()=> __patron_user_main(__patron_service) };
            let convert = quote_spanned! {ret.span()=> #p::service_result(#call.await) };
            quote! {
                #p::run_main_with_service(#info, |__patron_service: #p::Service| async move { #convert })
            }
        }
        Some(FnArg::Receiver(_)) => unreachable!("receivers are rejected above"),
    };
    Ok(quote! {
        #(#attrs)*
        #vis fn #ident() -> ::std::process::ExitCode {
            async fn __patron_user_main(#inputs_tokens) #output #body
            #run
        }
    })
}
