//! `#[patron::consumer(amqp = "queue", key = value, …)]`: parse the
//! attribute into a typed model (`parse.rs`, `model.rs`), check the rules
//! between its keys (`validate.rs`) and the handler (`handler.rs`) —
//! reporting every mistake at once — then emit the registration beside the
//! untouched function (`codegen.rs`).

mod codegen;
mod handler;
mod model;
pub(crate) mod parse;
mod validate;

use proc_macro2::TokenStream;

use crate::sig;

const USAGE: &str = "`#[patron::consumer]` goes on an `async fn`, e.g. `#[patron::consumer(amqp = \"orders\")] async fn on_order(msg: Message<Json<Order>>) -> Result<(), patron::Error> { Ok(()) }`";

pub fn expand(attr: TokenStream, item: TokenStream) -> TokenStream {
    sig::expand(item, USAGE, |func| {
        let parse::Parsed { attr, mut errors } = match syn::parse2::<parse::Parsed>(attr) {
            Ok(parsed) => parsed,
            Err(mut e) => {
                // Without a broker and source nothing else can be read;
                // the signature can still be checked.
                if let Err(sig_errors) = handler::check_signature(func) {
                    e.combine(sig_errors);
                }
                return Err(e);
            }
        };
        if let Err(e) = validate::validate(&attr) {
            errors.push(e);
        }
        let batches = !matches!(attr.broker, model::Broker::Sqs(_));
        match handler::Handler::analyse(func, attr.batch.is_some(), batches) {
            Ok(handler) => {
                errors.finish()?;
                Ok(codegen::generate(&attr, &handler, func))
            }
            Err(e) => Err(errors.and(e)),
        }
    })
}
