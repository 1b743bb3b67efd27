//! Emits the router side of a service's Rust glue: the `<S>_DESCRIPTOR`
//! constant, the `<S>Spec` marker and the `<S>Router` type.

use proc_macro2::{Literal, TokenStream};
use quote::quote;

use crate::Error;
use crate::ir::{MethodKind, Service, Strategy};
use crate::rust::{doc_attrs, parse_ident};

/// The descriptor constant, the spec marker and the router alias of `service`.
pub fn generate(service: &Service, krate: &TokenStream) -> Result<TokenStream, Error> {
    let [descriptor, spec, router, bridge] = service.generated_rust_names();
    let descriptor = parse_ident(service, &descriptor)?;
    let spec = parse_ident(service, &spec)?;
    let router = parse_ident(service, &router)?;
    let full = &service.full_name;
    let register = service.qualified("Router");

    let methods = service.methods.iter().map(|m| {
        let name = &m.name;
        let path = format!("/{full}/{}", m.name);
        let tag = Literal::u32_unsuffixed(m.tag);
        let kind = match m.kind {
            MethodKind::Unary => quote!(Unary),
            MethodKind::ServerStreaming => quote!(ServerStreaming),
            MethodKind::ClientStreaming => quote!(ClientStreaming),
            MethodKind::BidiStreaming => quote!(BidiStreaming),
        };
        let route_key = m
            .route_key
            .iter()
            .flat_map(|k| &k.field_numbers)
            .map(|n| Literal::u32_unsuffixed(*n));
        let idempotent = m.idempotent;
        quote! {
            #krate::codegen::MethodDescriptor {
                name: #name,
                path: #path,
                tag: #tag,
                kind: #krate::codegen::MethodKind::#kind,
                route_key: &[#(#route_key),*],
                idempotent: #idempotent,
            }
        }
    });
    let strategy = match service.default_strategy {
        Strategy::RoundRobin => quote!(RoundRobin),
        Strategy::PowerOfTwoChoices => quote!(PowerOfTwoChoices),
        Strategy::Weighted => quote!(Weighted),
        Strategy::ConsistentHash => quote!(ConsistentHash),
    };

    let mut descriptor_doc = vec![format!(" Routing description of `{full}`.")];
    if !service.methods.is_empty() {
        descriptor_doc.push(String::new());
        descriptor_doc.push(" Methods:".to_owned());
        descriptor_doc.push(String::new());
    }
    for m in &service.methods {
        let mut line = format!(" - `{}` ({}, tag {})", m.name, m.kind.describe(), m.tag);
        if let Some(key) = &m.route_key {
            line.push_str(&format!(", routing key `{}`", key.path));
        }
        if m.idempotent {
            line.push_str(", idempotent");
        }
        let mut comments = m.comments.iter();
        match comments.next() {
            Some(first) => line.push_str(&format!(":{first}")),
            None => line.push('.'),
        }
        descriptor_doc.push(line);
        descriptor_doc.extend(comments.map(|l| format!("  {l}")));
    }
    let descriptor_doc = doc_attrs(&descriptor_doc);
    let spec_doc = format!(" Names `{full}` for [`{router}`] and [`{bridge}`].");
    let file_descriptor_set = Literal::byte_string(&service.file_descriptor_set);

    let mut router_doc = service.comments.clone();
    if !router_doc.is_empty() {
        router_doc.push(String::new());
    }
    router_doc.push(format!(
        " Router of `{full}`: serves the service's own paths to unmodified clients and forwards \
         each call to a registered instance."
    ));
    let router_doc = doc_attrs(&router_doc);

    Ok(quote! {
        #descriptor_doc
        pub const #descriptor: #krate::codegen::ServiceDescriptor = #krate::codegen::ServiceDescriptor {
            name: #full,
            register_name: #register,
            methods: &[#(#methods),*],
            default_strategy: #krate::codegen::Strategy::#strategy,
        };
        #[doc = #spec_doc]
        #[derive(Clone, Copy, Debug, Default)]
        pub struct #spec;
        impl #krate::codegen::ServiceSpec for #spec {
            const NAME: &'static str = #full;
            const REGISTER_NAME: &'static str = #register;
            const DESCRIPTOR: &'static #krate::codegen::ServiceDescriptor = &#descriptor;
            /// The encoded `FileDescriptorSet` of the service's files and imports.
            const FILE_DESCRIPTOR_SET: &'static [u8] = #file_descriptor_set;
        }
        #router_doc
        pub type #router = #krate::codegen::Router<#spec>;
    })
}
