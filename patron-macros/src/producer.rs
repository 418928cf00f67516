//! `patron::producer!(amqp = "orders", payload = Json<Order>)`: declares a
//! destination the service publishes to and the payload it sends there, so
//! the AsyncAPI document shows a `send` operation beside the consumers'
//! `receive`. The declaration is documentation: publishing still goes
//! through the clients (`AmqpPublisher`, `KafkaProducer`, `SqsSender`).

use proc_macro2::{Span, TokenStream};
use quote::{quote, quote_spanned};
use syn::parse::{Parse, ParseStream};
use syn::spanned::Spanned;
use syn::{Ident, LitStr, Token, Type};

use crate::consumer::parse::{BROKERS, check_amqp_queue, check_kafka_topic, check_sqs_name};

const USAGE: &str = "write `patron::producer!(amqp = \"orders\", payload = Json<Order>)` (or `kafka = \"topic\"`, `sqs = \"queue\"`; payload `Json<T>`, `String` or `Bytes`)";

struct Producer {
    broker: Ident,
    destination: LitStr,
    payload: Type,
}

impl Parse for Producer {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        if input.is_empty() {
            return Err(syn::Error::new(
                Span::call_site(),
                format!("missing the broker and destination: {USAGE}"),
            ));
        }
        let broker: Ident = input
            .call(syn::ext::IdentExt::parse_any)
            .map_err(|e| syn::Error::new(e.span(), USAGE))?;
        let destination = match broker.to_string().as_str() {
            "amqp" | "kafka" | "sqs" => {
                input.parse::<Token![=]>().map_err(|e| {
                    syn::Error::new(
                        e.span(),
                        format!("expected `=` and the destination: `{broker} = \"orders\"`"),
                    )
                })?;
                let lit = crate::args::string(input, &broker.to_string(), "\"orders\"")?;
                match broker.to_string().as_str() {
                    "amqp" => check_amqp_queue(&lit)?,
                    "kafka" => check_kafka_topic(&lit)?,
                    _ => check_sqs_name(&lit)?,
                }
                lit
            }
            other => {
                let hint = match crate::units::did_you_mean(other, BROKERS) {
                    Some(s) => format!("did you mean `{s}`? "),
                    None => String::new(),
                };
                return Err(syn::Error::new(
                    broker.span(),
                    format!(
                        "unknown broker `{other}`; {hint}a producer starts with `amqp`, `kafka` or `sqs` and its destination"
                    ),
                ));
            }
        };
        let payload_missing = || {
            syn::Error::new(
                destination.span(),
                "missing the payload: add `payload = Json<Order>` (or `String`, `Bytes`)",
            )
        };
        if input.is_empty() {
            return Err(payload_missing());
        }
        input.parse::<Token![,]>()?;
        if input.is_empty() {
            return Err(payload_missing());
        }
        let key: Ident = input.call(syn::ext::IdentExt::parse_any)?;
        if key != "payload" {
            return Err(syn::Error::new(
                key.span(),
                format!(
                    "unknown producer argument `{key}`; a producer takes its destination and `payload = Type`"
                ),
            ));
        }
        input.parse::<Token![=]>()?;
        let payload: Type = input.parse()?;
        let _ = input.parse::<Option<Token![,]>>()?;
        if !input.is_empty() {
            return Err(
                input.error("a producer takes its destination and `payload = Type`, nothing more")
            );
        }
        Ok(Producer {
            broker,
            destination,
            payload,
        })
    }
}

pub fn expand(input: TokenStream) -> TokenStream {
    let producer = match syn::parse2::<Producer>(input) {
        Ok(p) => p,
        Err(e) => return e.to_compile_error(),
    };
    let p = quote!(::patron::__private);
    let broker = producer.broker.to_string();
    let destination = &producer.destination;
    let payload = &producer.payload;
    let describe = quote_spanned! {payload.span()=> __probe.describe_payload(__payload); };
    quote! {
        #[doc(hidden)]
        const _: () = {
            #p::inventory::submit! {
                #p::ProducerDef {
                    broker: #broker,
                    destination: #destination,
                    module: ::core::module_path!(),
                    payload: {
                        #[allow(unused_imports, clippy::all)]
                        fn __patron_payload(__payload: &mut #p::Payload<'_>) {
                            use #p::Undescribed as _;
                            let __probe = #p::Probe::<#p::Message<#payload>>::new();
                            #describe
                        }
                        __patron_payload
                    },
                }
            }
        };
    }
}
