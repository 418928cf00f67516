//! `#[patron::route(METHOD "/path", key = value, …)]`: parse the attribute,
//! check the function, then emit the registration beside the untouched
//! function. Attribute and signature mistakes are reported together.

mod codegen;
mod describe;
mod handler;
mod parse;

use proc_macro2::TokenStream;

use crate::sig;

const USAGE: &str = "`#[patron::route]` goes on an `async fn`, e.g. `#[patron::route(GET \"/index\")] async fn index() -> &'static str { \"hello\" }`";

pub fn expand(attr: TokenStream, item: TokenStream) -> TokenStream {
    sig::expand(item, USAGE, |func| {
        let attr = syn::parse2::<parse::RouteAttr>(attr);
        let handler = handler::Handler::analyse(func);
        match (attr, handler) {
            (Ok(attr), Ok(handler)) => Ok(codegen::generate(&attr, &handler, func)),
            (Err(e), Ok(_)) | (Ok(_), Err(e)) => Err(e),
            (Err(mut e), Err(sig_errors)) => {
                e.combine(sig_errors);
                Err(e)
            }
        }
    })
}
