//! Emits, beside the untouched handler, a hidden `const _` block holding a
//! `Send` check, the handler adapter (each argument built with a trait call
//! spanned on the user's type), the component builder and the `inventory`
//! registration — all inside a patron macro that turns into a compile error
//! naming the cargo feature when the broker's feature is off.

use proc_macro2::TokenStream;
use quote::{ToTokens, format_ident, quote, quote_spanned};
use syn::ItemFn;
use syn::spanned::Spanned;

use super::Handler;
use super::parse::ConsumerAttr;

pub fn generate(attr: &ConsumerAttr, handler: &Handler, func: &ItemFn) -> TokenStream {
    let p = quote!(::patron::__private);
    let name = &handler.name;
    let batch = attr.batch.is_some();

    let mut extract = Vec::new();
    let mut call_args = Vec::new();
    for (i, ty) in handler.args.iter().enumerate() {
        let arg = format_ident!("__patron_a{}", i);
        let tokens = if batch && i == handler.message {
            quote_spanned! {ty.span()=>
                let (#arg, __cx) = <#ty as #p::FromBatch>::from_batch(__deliveries, __attempt);
            }
        } else if batch {
            quote_spanned! {ty.span()=>
                let #arg = match <#ty as #p::FromDeps>::from_deps(__deps) {
                    ::core::result::Result::Ok(v) => v,
                    ::core::result::Result::Err(e) => return (__cx, #p::batch_failed(e)),
                };
            }
        } else {
            quote_spanned! {ty.span()=>
                let #arg = match <#ty as #p::FromDelivery>::from_delivery(__delivery, __attempt, __deps) {
                    ::core::result::Result::Ok(v) => v,
                    ::core::result::Result::Err(e) => return ::core::result::Result::Err(e),
                };
            }
        };
        extract.push(tokens);
        call_args.push(arg);
    }
    // The batch argument first, so `__cx` exists for the others' errors.
    if batch && handler.message != 0 {
        let m = extract.remove(handler.message);
        extract.insert(0, m);
    }
    let output = match &func.sig.output {
        syn::ReturnType::Type(_, ty) => quote_spanned! {ty.span()=>
            #p::ConsumerOutput::into_result(__output)
        },
        syn::ReturnType::Default => quote!(#p::ConsumerOutput::into_result(__output)),
    };
    // Spanned on the handler's name, so a non-`Send` future is reported
    // there (beside the check below), not on the attribute.
    let call = quote_spanned! {name.span()=>
        ::std::boxed::Box::pin(async move {
            let __output = #name(#(#call_args),*).await;
            #output
        })
    };
    let handler_impl = if batch {
        quote! {
            impl #p::BatchHandler for __PatronConsumer {
                fn call(
                    &self,
                    __deliveries: &[#p::Delivery],
                    __attempt: u32,
                    __deps: &#p::Arc<#p::Deps>,
                ) -> (#p::BatchCx, #p::BoxFuture<'static, #p::Result<()>>) {
                    #(#extract)*
                    (__cx, #call)
                }
            }
        }
    } else {
        quote! {
            impl #p::MessageHandler for __PatronConsumer {
                fn call(
                    &self,
                    __delivery: &#p::Delivery,
                    __attempt: u32,
                    __deps: &#p::Arc<#p::Deps>,
                ) -> ::core::result::Result<#p::BoxFuture<'static, #p::Result<()>>, #p::HandlerError> {
                    #(#extract)*
                    ::core::result::Result::Ok(#call)
                }
            }
        }
    };

    let panics = handler.args.iter().map(|_| quote!(::core::panic!()));
    let send_check = quote_spanned! {name.span()=>
        #[allow(warnings, unreachable_code, clippy::all)]
        fn __patron_check_send() {
            fn __patron_assert_send<F: ::core::future::Future + ::core::marker::Send>(_: F) {}
            __patron_assert_send(#name(#(#panics),*));
        }
    };

    let opt_str = |v: &Option<syn::LitStr>| match v {
        Some(lit) => quote!(::core::option::Option::Some(#lit)),
        None => quote!(::core::option::Option::None),
    };
    let opt = |v: Option<TokenStream>| match v {
        Some(t) => quote!(::core::option::Option::Some(#t)),
        None => quote!(::core::option::Option::None),
    };
    let queue = &attr.queue;
    let exchange = opt_str(&attr.exchange);
    let routing_key = opt_str(&attr.routing_key);
    let dlq = opt_str(&attr.dlq);
    let declare = attr.declare;
    let prefetch = opt(attr.prefetch.map(|n| quote!(#n)));
    let concurrency = opt(attr.concurrency.map(|n| {
        let n = n as usize;
        quote!(#n)
    }));
    let retries = opt(attr.retries.map(|n| quote!(#n)));
    let max_deliveries = opt(attr.max_deliveries.map(|n| quote!(#n)));
    let backoff = opt(attr
        .backoff_nanos
        .map(|n| quote!(::core::time::Duration::from_nanos(#n))));
    let on_failure = opt(attr.on_failure.as_deref().map(|s| {
        let variant = match s {
            "dlq" => quote!(Dlq),
            "requeue" => quote!(Requeue),
            "drop" => quote!(Drop),
            _ => quote!(Exit),
        };
        quote!(#p::OnFailure::#variant)
    }));
    let batch_spec = opt(attr.batch.map(|(size, _)| {
        let size = size as usize;
        let timeout = attr.batch_timeout_nanos.unwrap_or(1_000_000_000);
        quote!((#size, ::core::time::Duration::from_nanos(#timeout)))
    }));
    let builder = if batch {
        quote!(#p::amqp_batch_consumer)
    } else {
        quote!(#p::amqp_consumer)
    };
    let dedup_by_key = attr.dedup_by_key;
    let handler_name = name.to_string();
    let deps = handler.deps.iter().map(|ty| {
        let type_name = ty.to_token_stream().to_string().replace(' ', "");
        quote! {
            #p::DepSpec { type_name: #type_name, type_id: ::core::any::TypeId::of::<#ty> }
        }
    });
    let line = quote_spanned! {name.span()=> ::core::line!() };
    let file = quote_spanned! {name.span()=> ::core::file!() };
    let sqs = attr.broker == "sqs";
    let kafka = attr.broker == "kafka";
    let broker_str = if sqs {
        "sqs"
    } else if kafka {
        "kafka"
    } else {
        "amqp"
    };
    let destination = attr
        .topics
        .iter()
        .map(|t| t.value())
        .collect::<Vec<_>>()
        .join(",");
    let gate = if kafka {
        quote_spanned! {attr.broker.span()=> ::patron::__patron_require_kafka! }
    } else if sqs {
        quote_spanned! {attr.broker.span()=> ::patron::__patron_require_sqs! }
    } else {
        quote_spanned! {attr.broker.span()=> ::patron::__patron_require_amqp! }
    };
    let common = quote! {
        #p::CommonSpec {
            name: #handler_name,
            concurrency: #concurrency,
            retries: #retries,
            max_deliveries: #max_deliveries,
            backoff: #backoff,
            on_failure: #on_failure,
            dlq: #dlq,
        }
    };
    let (builder, spec) = if kafka {
        let topics = &attr.topics;
        let group = &attr.group;
        let builder = if batch {
            quote!(#p::kafka_batch_consumer)
        } else {
            quote!(#p::kafka_consumer)
        };
        (
            builder,
            quote! {
                #p::KafkaSpec {
                    topics: &[#(#topics),*],
                    group: #group,
                    batch: #batch_spec,
                    dedup_by_key: #dedup_by_key,
                }
            },
        )
    } else if sqs {
        let secs = |v: Option<u64>| opt(v.map(|n| quote!(::core::time::Duration::from_secs(#n))));
        let (wait, visibility) = (secs(attr.wait_secs), secs(attr.visibility_secs));
        let max_messages = opt(attr.max_messages.map(|n| {
            let n = i32::from(n);
            quote!(#n)
        }));
        (
            quote!(#p::sqs_consumer),
            quote! {
                #p::SqsSpec {
                    queue: #queue,
                    wait: #wait,
                    max_messages: #max_messages,
                    visibility: #visibility,
                }
            },
        )
    } else {
        (
            builder,
            quote! {
                #p::AmqpSpec {
                    queue: #queue,
                    exchange: #exchange,
                    routing_key: #routing_key,
                    declare: #declare,
                    prefetch: #prefetch,
                    batch: #batch_spec,
                }
            },
        )
    };
    let build_call = quote!(#builder(#common, #spec, __PatronConsumer));

    quote! {
        #func

        #gate {
            #[doc(hidden)]
            #[allow(non_snake_case, clippy::all)]
            const _: () = {
                #send_check

                struct __PatronConsumer;

                #handler_impl

                fn __patron_build() -> #p::BoxedComponent {
                    #build_call
                }

                #p::inventory::submit! {
                    #p::ConsumerDef {
                        broker: #broker_str,
                        destination: #destination,
                        handler: #handler_name,
                        module: ::core::module_path!(),
                        file: #file,
                        line: #line,
                        deps: &[#(#deps),*],
                        build: __patron_build,
                    }
                }
            };
        }
    }
}
