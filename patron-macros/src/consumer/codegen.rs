//! Emits, beside the untouched handler, a hidden `const _` block holding a
//! `Send` check, the handler adapter (each argument built with a trait call
//! spanned on the user's type), the component builder and the `inventory`
//! registration — all inside a patron macro that turns into a compile error
//! naming the cargo feature when the broker's feature is off.

use proc_macro2::TokenStream;
use quote::{ToTokens, format_ident, quote, quote_spanned};
use syn::ItemFn;
use syn::spanned::Spanned;

use super::handler::Handler;
use super::model::{Broker, ConsumerAttr, OnFailure};

/// `::patron::__private`, the only path generated code names.
fn private() -> TokenStream {
    quote!(::patron::__private)
}

pub fn generate(attr: &ConsumerAttr, handler: &Handler, func: &ItemFn) -> TokenStream {
    let p = private();
    let send_check = send_check(handler);
    let handler_impl = handler_impl(attr, handler, func);
    let build = build_call(attr, handler);
    let registration = registration(attr, handler);
    let gate = match &attr.broker {
        Broker::Kafka(_) => {
            quote_spanned! {attr.broker_ident.span()=> ::patron::__patron_require_kafka! }
        }
        Broker::Sqs(_) => {
            quote_spanned! {attr.broker_ident.span()=> ::patron::__patron_require_sqs! }
        }
        Broker::Amqp(_) => {
            quote_spanned! {attr.broker_ident.span()=> ::patron::__patron_require_amqp! }
        }
    };
    quote! {
        #func

        #gate {
            #[doc(hidden)]
            #[allow(non_snake_case, clippy::all)]
            const _: () = {
                #send_check

                struct __PatronConsumer;

                #handler_impl

                fn __patron_build() -> #p::BuiltConsumer {
                    #build
                }

                #registration
            };
        }
    }
}

/// Asserts the handler's future is `Send`, reported on its name.
fn send_check(handler: &Handler) -> TokenStream {
    let name = &handler.name;
    let panics = handler.args.iter().map(|_| quote!(::core::panic!()));
    quote_spanned! {name.span()=>
        #[allow(warnings, unreachable_code, clippy::all)]
        fn __patron_check_send() {
            fn __patron_assert_send<F: ::core::future::Future + ::core::marker::Send>(_: F) {}
            __patron_assert_send(#name(#(#panics),*));
        }
    }
}

/// The `MessageHandler` (or `BatchHandler`) impl calling the user's function.
fn handler_impl(attr: &ConsumerAttr, handler: &Handler, func: &ItemFn) -> TokenStream {
    let p = private();
    let batch = attr.batch.is_some();
    let (extract, call_args) = extractors(handler, batch);
    let output = match &func.sig.output {
        syn::ReturnType::Type(_, ty) => quote_spanned! {ty.span()=>
            #p::ConsumerOutput::into_result(__output)
        },
        syn::ReturnType::Default => quote!(#p::ConsumerOutput::into_result(__output)),
    };
    // Spanned on the handler's name, so a non-`Send` future is reported
    // there (beside the check), not on the attribute.
    let name = &handler.name;
    let call = quote_spanned! {name.span()=>
        ::std::boxed::Box::pin(async move {
            let __output = #name(#(#call_args),*).await;
            #output
        })
    };
    if batch {
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
    }
}

/// One statement per argument building it (spanned on its type), and the
/// names the call passes.
fn extractors(handler: &Handler, batch: bool) -> (Vec<TokenStream>, Vec<syn::Ident>) {
    let p = private();
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
    (extract, call_args)
}

fn some_or_none(v: Option<TokenStream>) -> TokenStream {
    match v {
        Some(t) => quote!(::core::option::Option::Some(#t)),
        None => quote!(::core::option::Option::None),
    }
}

fn nanos(n: u64) -> TokenStream {
    quote!(::core::time::Duration::from_nanos(#n))
}

/// The `CommonSpec` every broker's builder takes.
fn common_spec(attr: &ConsumerAttr, handler: &Handler) -> TokenStream {
    let p = private();
    let c = &attr.common;
    let handler_name = handler.name.to_string();
    let concurrency = some_or_none(c.concurrency.map(|n| {
        let n = n as usize;
        quote!(#n)
    }));
    let retries = some_or_none(c.retries.map(|n| quote!(#n)));
    let max_deliveries = some_or_none(c.max_deliveries.map(|n| quote!(#n)));
    let backoff = some_or_none(c.backoff_nanos.map(nanos));
    let on_failure = some_or_none(c.on_failure.map(|(strategy, _)| {
        let variant = match strategy {
            OnFailure::Dlq => quote!(Dlq),
            OnFailure::Requeue => quote!(Requeue),
            OnFailure::Drop => quote!(Drop),
            OnFailure::Exit => quote!(Exit),
        };
        quote!(#p::OnFailure::#variant)
    }));
    let dlq = some_or_none(c.dlq.as_ref().map(ToTokens::to_token_stream));
    quote! {
        #p::CommonSpec {
            name: #handler_name,
            concurrency: #concurrency,
            retries: #retries,
            max_deliveries: #max_deliveries,
            backoff: #backoff,
            on_failure: #on_failure,
            dlq: #dlq,
        }
    }
}

/// `builder(common, broker spec, handler)`: the broker's component.
fn build_call(attr: &ConsumerAttr, handler: &Handler) -> TokenStream {
    let p = private();
    let common = common_spec(attr, handler);
    let batch = attr.batch.is_some();
    let batch_spec = some_or_none(attr.batch.map(|b| {
        let size = b.size as usize;
        let timeout = nanos(attr.batch_timeout.map_or(1_000_000_000, |(n, _)| n));
        quote!((#size, #timeout))
    }));
    let opt_str = |v: &Option<syn::LitStr>| some_or_none(v.as_ref().map(ToTokens::to_token_stream));
    let (builder, spec) = match &attr.broker {
        Broker::Amqp(a) => {
            let (queue, declare) = (&a.queue, a.declare);
            let (exchange, routing_key) = (opt_str(&a.exchange), opt_str(&a.routing_key));
            let prefetch = some_or_none(a.prefetch.map(|(n, _)| quote!(#n)));
            let builder = if batch {
                quote!(#p::amqp_batch_consumer)
            } else {
                quote!(#p::amqp_consumer)
            };
            let spec = quote! {
                #p::AmqpSpec {
                    queue: #queue,
                    exchange: #exchange,
                    routing_key: #routing_key,
                    declare: #declare,
                    prefetch: #prefetch,
                    batch: #batch_spec,
                }
            };
            (builder, spec)
        }
        Broker::Sqs(s) => {
            let queue = &s.queue;
            let secs = |v: Option<u64>| {
                some_or_none(v.map(|n| quote!(::core::time::Duration::from_secs(#n))))
            };
            let (wait, visibility) = (secs(s.wait_secs), secs(s.visibility_secs));
            let max_messages = some_or_none(s.max_messages.map(|n| {
                let n = i32::from(n);
                quote!(#n)
            }));
            let spec = quote! {
                #p::SqsSpec {
                    queue: #queue,
                    wait: #wait,
                    max_messages: #max_messages,
                    visibility: #visibility,
                }
            };
            (quote!(#p::sqs_consumer), spec)
        }
        Broker::Kafka(k) => {
            let (topics, group) = (&k.topics, &k.group);
            let dedup_by_key = k.dedup_by_key.is_some();
            let builder = if batch {
                quote!(#p::kafka_batch_consumer)
            } else {
                quote!(#p::kafka_consumer)
            };
            let spec = quote! {
                #p::KafkaSpec {
                    topics: &[#(#topics),*],
                    group: #group,
                    batch: #batch_spec,
                    dedup_by_key: #dedup_by_key,
                }
            };
            (builder, spec)
        }
    };
    quote!(#builder(#common, #spec, __PatronConsumer))
}

/// The `inventory` submission of the consumer's `ConsumerDef`.
fn registration(attr: &ConsumerAttr, handler: &Handler) -> TokenStream {
    let p = private();
    let name = &handler.name;
    let handler_name = name.to_string();
    let broker = attr.broker.name();
    let destination = attr.broker.destination();
    let deps = handler.deps.iter().map(|ty| {
        let type_name = ty.to_token_stream().to_string().replace(' ', "");
        quote! {
            #p::DepSpec { type_name: #type_name, type_id: ::core::any::TypeId::of::<#ty> }
        }
    });
    let line = quote_spanned! {name.span()=> ::core::line!() };
    let file = quote_spanned! {name.span()=> ::core::file!() };
    // A payload type without a schema is reported on the message type.
    let message = &handler.args[handler.message];
    let describe = if attr.common.undocumented {
        quote!(#p::Undescribed::describe_payload(&__probe, __payload);)
    } else {
        quote_spanned! {message.span()=> __probe.describe_payload(__payload); }
    };
    quote! {
        #p::inventory::submit! {
            #p::ConsumerDef {
                broker: #broker,
                destination: #destination,
                handler: #handler_name,
                module: ::core::module_path!(),
                file: #file,
                line: #line,
                deps: &[#(#deps),*],
                build: __patron_build,
                payload: {
                    #[allow(unused_imports, clippy::all)]
                    fn __patron_payload(__payload: &mut #p::Payload<'_>) {
                        use #p::Undescribed as _;
                        let __probe = #p::Probe::<#message>::new();
                        #describe
                    }
                    __patron_payload
                },
            }
        }
    }
}
