//! Emits, beside the untouched handler, a hidden `const _` block holding:
//! compile-time checks spanned on the user's tokens, a wrapper that maps
//! extractor rejections to problem bodies, the router builder, and the
//! `inventory` registration.

use proc_macro2::TokenStream;
use quote::{ToTokens, format_ident, quote, quote_spanned};
use syn::ItemFn;
use syn::spanned::Spanned;

use super::describe::route_doc;
use super::handler::{Handler, contains_impl_trait};
use super::parse::RouteAttr;
use crate::sig;

pub fn generate(attr: &RouteAttr, handler: &Handler, func: &ItemFn) -> TokenStream {
    let p = quote!(::patron::__private);
    let name = &handler.name;
    let method = &attr.method;
    let method_str = method.to_string();
    let path = attr.path.value();
    let span_name = format!("{method_str} {path}");

    // The wrapper extracts each argument itself, the way axum's `Handler`
    // impls do, with every extractor call spanned on the user's type: an
    // argument that is not an extractor is an error on that argument, and a
    // rejection becomes a problem body.
    let count = handler.args.len();
    let mut extract = Vec::new();
    let mut call_args = Vec::new();
    for (i, ty) in handler.args.iter().enumerate() {
        let arg = format_ident!("__patron_a{}", i);
        if i + 1 < count {
            extract.push(quote_spanned! {ty.span()=>
                let #arg = match <#ty as ::patron::http::HandlerArg<_>>::extract(&mut __parts, &__state).await {
                    ::core::result::Result::Ok(v) => v,
                    ::core::result::Result::Err(rejection) => return #p::rejection(rejection).await,
                };
            });
        } else if sig::last_segment(ty).is_some_and(|name| name == "Json") {
            // axum's `Json<T>` is read by patron (whole floats are integers,
            // as in the OpenAPI document's schemas); another type named
            // `Json` falls through to its own extractor.
            let call = quote_spanned! {ty.span()=> __last.extract(__req, &__state) };
            extract.push(quote! {
                let __req = #p::Request::from_parts(__parts, __body);
                let #arg = match {
                    #[allow(unused_imports)]
                    use #p::OtherLastArg as _;
                    let __last = #p::LastArg::<#ty>::new();
                    #call
                }.await {
                    ::core::result::Result::Ok(v) => v,
                    ::core::result::Result::Err(rejection) => return #p::rejection(rejection).await,
                };
            });
        } else {
            extract.push(quote_spanned! {ty.span()=>
                let __req = #p::Request::from_parts(__parts, __body);
                let #arg = match <#ty as ::patron::http::LastHandlerArg<_>>::extract(__req, &__state).await {
                    ::core::result::Result::Ok(v) => v,
                    ::core::result::Result::Err(rejection) => return #p::rejection(rejection).await,
                };
            });
        }
        call_args.push(arg);
    }
    let split = if count == 0 {
        quote!(let _ = (__request, __state);)
    } else {
        quote! {
            #[allow(unused_mut)]
            let (mut __parts, __body) = __request.into_parts();
        }
    };
    let respond = match &handler.output {
        Some(out) if !contains_impl_trait(out) => quote_spanned! {out.span()=>
            ::patron::http::HandlerResponse::into_handler_response(__output)
        },
        _ => quote!(::patron::http::HandlerResponse::into_handler_response(
            __output
        )),
    };
    let panics = handler.args.iter().map(|_| quote!(::core::panic!()));
    let send_span = func.sig.ident.span();
    let send_check = quote_spanned! {send_span=>
        #[allow(warnings, unreachable_code, clippy::all)]
        fn __patron_check_send() {
            fn __patron_assert_send<F: ::core::future::Future + ::core::marker::Send>(_: F) {}
            __patron_assert_send(#name(#(#panics),*));
        }
    };
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
    let cache = match attr.cache_nanos {
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
    let rate_limit = match attr.rate_limit {
        Some((count, nanos)) => quote! {
            ::core::option::Option::Some(#p::RateSpec {
                count: #count,
                per: ::core::time::Duration::from_nanos(#nanos),
            })
        },
        None => quote!(::core::option::Option::None),
    };
    let handler_name = name.to_string();
    let line = quote_spanned! {name.span()=> ::core::line!() };
    let file = quote_spanned! {name.span()=> ::core::file!() };
    let doc = route_doc(attr, handler, func);

    quote! {
        #func

        #[doc(hidden)]
        #[allow(non_snake_case, clippy::all)]
        const _: () = {
            #send_check

            async fn __patron_handler(__request: #p::Request, __state: #p::AppState) -> #p::Response {
                #split
                #(#extract)*
                let __output = #name(#(#call_args),*).await;
                #respond
            }

            fn __patron_build(__ctx: &#p::RouteCtx) -> #p::MethodRouter {
                let __mr = #p::method_router(#p::MethodFilter::#method, #handler_ref);
                let __mr = __ctx.with_cache(__mr);
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
                    rate_limit: #rate_limit,
                    cache: #cache,
                    deps: &[#(#deps),*],
                    build: __patron_build,
                    doc: #doc,
                }
            }
        };
    }
}
