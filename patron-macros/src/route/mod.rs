//! `#[patron::route(METHOD "/path", key = value, …)]`: parse the attribute,
//! check the function, then emit the registration beside the untouched
//! function.

mod codegen;
mod handler;

pub use handler::dep_inner;
mod parse;

use proc_macro2::TokenStream;
use quote::quote;

pub fn expand(attr: TokenStream, item: TokenStream) -> TokenStream {
    let func: syn::ItemFn = match syn::parse2(item.clone()) {
        Ok(f) => f,
        Err(_) => {
            let err = syn::Error::new(
                proc_macro2::Span::call_site(),
                "`#[patron::route]` goes on an `async fn`, e.g. `#[patron::route(GET \"/index\")] async fn index() -> &'static str { \"hello\" }`",
            )
            .to_compile_error();
            return quote! { #err #item };
        }
    };
    let result = syn::parse2::<parse::RouteAttr>(attr)
        .and_then(|attr| handler::Handler::analyse(&func).map(|h| (attr, h)))
        .map(|(attr, handler)| codegen::generate(&attr, &handler, &func));
    match result {
        Ok(tokens) => tokens,
        Err(err) => {
            let err = err.to_compile_error();
            quote! { #err #func }
        }
    }
}
