//! Emits the bridge side of a service's Rust glue: `<S>Bridge`, which wraps
//! the user's tonic implementation of the service.

use proc_macro2::TokenStream;
use quote::quote;

use crate::Error;
use crate::ident;
use crate::ir::Service;
use crate::rust::parse_ident;

/// The `<S>Bridge` constructor type of `service`.
pub fn generate(service: &Service, krate: &TokenStream) -> Result<TokenStream, Error> {
    let [_, spec, _, bridge] = service.generated_rust_names();
    let spec = parse_ident(service, &spec)?;
    let bridge = parse_ident(service, &bridge)?;
    let server_mod = parse_ident(service, &ident::tonic_server_module(&service.name))?;
    let trait_name = ident::tonic_server_trait(&service.name);
    let server_name = format!("{trait_name}Server");
    let server_trait = parse_ident(service, &trait_name)?;
    let server = parse_ident(service, &server_name)?;
    let doc = format!(" Connects an implementation of [`{server_mod}::{trait_name}`] to routers.");
    let server_ty = quote!(#server_mod::#server<T>);
    let bridge_ty = quote!(#krate::codegen::Bridge<#spec, #server_ty>);

    Ok(quote! {
        #[doc = #doc]
        #[derive(Clone, Copy, Debug, Default)]
        pub struct #bridge;
        impl #bridge {
            /// Wraps the service implementation `service` in a bridge.
            pub fn new<T: #server_mod::#server_trait>(service: T) -> #bridge_ty {
                #krate::codegen::Bridge::new(#server_mod::#server::new(service))
            }
            /// Wraps an already configured server (compression, message size limits) in a bridge.
            pub fn from_server<T: #server_mod::#server_trait>(server: #server_ty) -> #bridge_ty {
                #krate::codegen::Bridge::new(server)
            }
        }
    })
}
