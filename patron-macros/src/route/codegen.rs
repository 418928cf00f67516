//! Emits, beside the untouched handler, a hidden `const _` block holding:
//! compile-time checks spanned on the user's tokens, a wrapper that maps
//! extractor rejections to problem bodies, the router builder, and the
//! `inventory` registration.

use proc_macro2::TokenStream;
use quote::{format_ident, quote, quote_spanned, ToTokens};
use syn::spanned::Spanned;
use syn::ItemFn;

use super::handler::{contains_impl_trait, Handler};
use super::parse::RouteAttr;

pub fn generate(attr: &RouteAttr, handler: &Handler, func: &ItemFn) -> TokenStream {
    let p = quote!(::patron::__private);
    let name = &handler.name;
    let method = &attr.method;
    let method_str = method.to_string();
    let path = attr.path.value();
    let span_name = format!("{method_str} {path}");

    // One check per argument, spanned on its type, so "not an extractor"
    // lands on that argument.
    let count = handler.args.len();
    let mut checks = Vec::new();
    for (i, ty) in handler.args.iter().enumerate() {
        let check = format_ident!("__patron_check_arg_{}", i);
        if i + 1 < count {
            checks.push(quote_spanned! {ty.span()=>
                #[allow(warnings, clippy::all)]
                fn #check() where #ty: #p::FromRequestParts<#p::AppState> {}
            });
        } else {
            let call = format_ident!("__patron_check_arg_{}_call", i);
            checks.push(quote_spanned! {ty.span()=>
                #[allow(warnings, clippy::all)]
                fn #check<M>() where #ty: #p::FromRequest<#p::AppState, M> {}
                #[allow(warnings, clippy::all)]
                fn #call() { #check(); }
            });
        }
    }
    if let Some(out) = &handler.output {
        if !contains_impl_trait(out) {
            checks.push(quote_spanned! {out.span()=>
                #[allow(warnings, clippy::all)]
                fn __patron_check_output() where #out: #p::IntoResponse {}
            });
        }
    }
    let panics = handler.args.iter().map(|_| quote!(::core::panic!()));
    let send_span = func.sig.ident.span();
    checks.push(quote_spanned! {send_span=>
        #[allow(warnings, unreachable_code, clippy::all)]
        fn __patron_check_send() {
            fn __patron_assert_send<F: ::core::future::Future + ::core::marker::Send>(_: F) {}
            __patron_assert_send(#name(#(#panics),*));
        }
    });

    let wrapper_args = handler.args.iter().enumerate().map(|(i, ty)| {
        let arg = format_ident!("__patron_a{}", i);
        quote_spanned! {ty.span()=> #arg: #p::Ext<#ty> }
    });
    let call_args = (0..count).map(|i| {
        let arg = format_ident!("__patron_a{}", i);
        quote!(#arg.0)
    });
    let handler_ref = quote_spanned! {name.span()=> __patron_handler };

    // `middleware = [f, g]` runs f then g: the last layer applied is the
    // outermost, so apply in reverse.
    let middleware = attr.middleware.iter().rev().map(|mw| {
        quote_spanned! {mw.span()=> let __mr = __mr.layer(#p::from_fn(#mw)); }
    });
    let (auth_apply, auth_spec) = match &attr.auth {
        Some(ty) => {
            let type_name = ty.to_token_stream().to_string().replace(' ', "");
            (
                quote_spanned! {ty.span()=> let __mr = __ctx.with_auth::<#ty>(__mr); },
                quote! {
                    ::core::option::Option::Some(#p::AuthSpec {
                        type_name: #type_name,
                        type_id: ::core::any::TypeId::of::<#ty>,
                    })
                },
            )
        }
        None => (quote!(), quote!(::core::option::Option::None)),
    };
    let middleware_names = attr
        .middleware
        .iter()
        .map(|m| m.to_token_stream().to_string().replace(' ', ""));
    let deps = handler.deps.iter().map(|ty| {
        let type_name = ty.to_token_stream().to_string().replace(' ', "");
        quote! {
            #p::DepSpec { type_name: #type_name, type_id: ::core::any::TypeId::of::<#ty> }
        }
    });
    let trace = attr.trace;
    let timeout = match attr.timeout_nanos {
        Some(n) => quote!(::core::option::Option::Some(::core::time::Duration::from_nanos(#n))),
        None => quote!(::core::option::Option::None),
    };
    let body_limit = match attr.body_limit {
        Some(n) => {
            let n = n as usize;
            quote!(::core::option::Option::Some(#n))
        }
        None => quote!(::core::option::Option::None),
    };
    let handler_name = name.to_string();
    let line = quote_spanned! {name.span()=> ::core::line!() };
    let file = quote_spanned! {name.span()=> ::core::file!() };

    quote! {
        #func

        #[doc(hidden)]
        #[allow(non_snake_case, clippy::all)]
        const _: () = {
            #(#checks)*

            async fn __patron_handler(#(#wrapper_args),*) -> #p::Response {
                #p::IntoResponse::into_response(#name(#(#call_args),*).await)
            }

            fn __patron_build(__ctx: &#p::RouteCtx) -> #p::MethodRouter {
                let __mr = #p::method_router(#p::MethodFilter::#method, #handler_ref);
                #(#middleware)*
                #auth_apply
                __mr
            }

            #p::inventory::submit! {
                #p::RouteDef {
                    method: #method_str,
                    path: #path,
                    span_name: #span_name,
                    handler: #handler_name,
                    module: ::core::module_path!(),
                    file: #file,
                    line: #line,
                    auth: #auth_spec,
                    middleware: &[#(#middleware_names),*],
                    trace: #trace,
                    timeout: #timeout,
                    body_limit: #body_limit,
                    deps: &[#(#deps),*],
                    build: __patron_build,
                }
            }
        };
    }
}
