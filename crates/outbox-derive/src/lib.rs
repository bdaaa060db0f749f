//! `#[derive(Event)]` for **outbox-relay**.
//!
//! On a struct it implements `Event`: the struct's fields are the payload
//! (through serde, so the struct also derives `Serialize`, `Deserialize` and
//! `schemars::JsonSchema`), and its event type name is the struct's name, or
//! the one given with `#[event(name = "...")]`.
//!
//! On an enum whose variants each hold one event type (`Placed(OrderPlaced)`)
//! it implements `Events`: the enum is a set of event types, a writer takes
//! any variant, and a consumer decodes an envelope into the variant its type
//! names. It also implements `From` for each variant's type.
//!
//! The generated code names the core crate through whichever of
//! `outbox-relay-core`, `outbox-dynamodb`, `outbox-cosmos` or `outbox-consumer` the
//! calling crate depends on, so any one of them is enough.

use proc_macro::TokenStream;
use proc_macro_crate::{FoundCrate, crate_name};
use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::quote;
use syn::{Data, DeriveInput, Fields, Ident, LitStr, parse_macro_input};

/// Makes a struct an event type, or an enum a set of event types. See the
/// crate documentation.
#[proc_macro_derive(Event, attributes(event))]
pub fn derive_event(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    expand(&input)
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

fn expand(input: &DeriveInput) -> syn::Result<TokenStream2> {
    let core = core_path()?;
    match &input.data {
        Data::Struct(_) => expand_struct(input, &core),
        Data::Enum(data) => expand_enum(input, data, &core),
        Data::Union(_) => Err(syn::Error::new_spanned(
            &input.ident,
            "`#[derive(Event)]` takes a struct (one event type) or an enum of event types",
        )),
    }
}

/// The core crate's package, whose library is [`CORE_LIBRARY`].
const CORE_PACKAGE: &str = "outbox-relay-core";
/// The core crate's library name.
const CORE_LIBRARY: &str = "outbox_core";

/// The path of `outbox_core` as the calling crate can name it.
fn core_path() -> syn::Result<TokenStream2> {
    if let Ok(found) = crate_name(CORE_PACKAGE) {
        return Ok(match found {
            FoundCrate::Itself => quote!(crate),
            FoundCrate::Name(name) => {
                // Not renamed, the dependency is named by its library: `outbox_core`.
                let name = if name == CORE_PACKAGE.replace('-', "_") {
                    CORE_LIBRARY
                } else {
                    &name
                };
                let ident = Ident::new(name, Span::call_site());
                quote!(::#ident)
            }
        });
    }
    for facade in ["outbox-dynamodb", "outbox-cosmos", "outbox-consumer"] {
        if let Ok(FoundCrate::Name(name)) = crate_name(facade) {
            let ident = Ident::new(&name, Span::call_site());
            return Ok(quote!(::#ident::outbox_core));
        }
    }
    Err(syn::Error::new(
        Span::call_site(),
        "`#[derive(Event)]` needs a dependency on outbox-dynamodb, outbox-cosmos, outbox-consumer or outbox-relay-core",
    ))
}

fn expand_struct(input: &DeriveInput, core: &TokenStream2) -> syn::Result<TokenStream2> {
    let ident = &input.ident;
    let name = event_name(input)?.unwrap_or_else(|| LitStr::new(&ident.to_string(), ident.span()));
    if name.value().trim().is_empty() {
        return Err(syn::Error::new_spanned(
            name,
            "an event type name must not be empty",
        ));
    }
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    Ok(quote! {
        impl #impl_generics #core::Event for #ident #ty_generics #where_clause {
            const EVENT_TYPE: &'static str = #name;
        }
    })
}

/// `#[event(name = "...")]`, if given.
fn event_name(input: &DeriveInput) -> syn::Result<Option<LitStr>> {
    let mut name = None;
    for attr in input.attrs.iter().filter(|a| a.path().is_ident("event")) {
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("name") {
                name = Some(meta.value()?.parse::<LitStr>()?);
                Ok(())
            } else {
                Err(meta.error("unknown `event` attribute; the one accepted is `name = \"...\"`"))
            }
        })?;
    }
    Ok(name)
}

fn expand_enum(input: &DeriveInput, data: &syn::DataEnum, core: &TokenStream2) -> syn::Result<TokenStream2> {
    let ident = &input.ident;
    if let Some(attr) = input.attrs.iter().find(|a| a.path().is_ident("event")) {
        return Err(syn::Error::new_spanned(
            attr,
            "an enum of events takes its type names from its variants' types; put `#[event(name = ...)]` on those",
        ));
    }
    if !input.generics.params.is_empty() {
        return Err(syn::Error::new_spanned(
            &input.generics,
            "`#[derive(Event)]` does not take a generic enum",
        ));
    }
    let mut variants = Vec::new();
    for variant in &data.variants {
        let Fields::Unnamed(fields) = &variant.fields else {
            return Err(syn::Error::new_spanned(
                variant,
                "each variant holds one event type, e.g. `Placed(OrderPlaced)`",
            ));
        };
        let [field] = fields.unnamed.iter().collect::<Vec<_>>()[..] else {
            return Err(syn::Error::new_spanned(
                variant,
                "each variant holds exactly one event type, e.g. `Placed(OrderPlaced)`",
            ));
        };
        variants.push((&variant.ident, &field.ty));
    }
    if variants.is_empty() {
        return Err(syn::Error::new_spanned(
            ident,
            "an enum of events needs at least one variant",
        ));
    }
    let names: Vec<_> = variants.iter().map(|(v, _)| *v).collect();
    let types: Vec<_> = variants.iter().map(|(_, t)| *t).collect();
    Ok(quote! {
        impl #core::Events for #ident {
            fn event_type(&self) -> &'static str {
                match self {
                    #( Self::#names(e) => #core::Events::event_type(e), )*
                }
            }

            fn to_payload(&self) -> ::core::result::Result<#core::Payload, #core::EnvelopeError> {
                match self {
                    #( Self::#names(e) => #core::Events::to_payload(e), )*
                }
            }

            fn event_types() -> ::std::vec::Vec<&'static str> {
                let mut all = ::std::vec::Vec::new();
                #( all.extend(<#types as #core::Events>::event_types()); )*
                all
            }

            fn from_payload(
                event_type: &str,
                payload: &#core::Payload,
            ) -> ::core::result::Result<Self, #core::TypedEventError> {
                #(
                    if <#types as #core::Events>::event_types().contains(&event_type) {
                        return <#types as #core::Events>::from_payload(event_type, payload).map(Self::#names);
                    }
                )*
                ::core::result::Result::Err(#core::TypedEventError::UnknownType {
                    event_type: ::std::string::ToString::to_string(event_type),
                    known: <Self as #core::Events>::event_types(),
                })
            }

            fn payload_schemas(
                generator: &mut #core::schemars::SchemaGenerator,
            ) -> ::std::vec::Vec<(&'static str, #core::schemars::Schema)> {
                let mut all = ::std::vec::Vec::new();
                #( all.extend(<#types as #core::Events>::payload_schemas(generator)); )*
                all
            }
        }

        #(
            impl ::core::convert::From<#types> for #ident {
                fn from(event: #types) -> Self {
                    Self::#names(event)
                }
            }
        )*
    })
}
