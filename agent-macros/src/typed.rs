//! `#[derive(TypedContextData)]`.
//!
//! Invariants:
//! - The impl is registered with typetag under the type's name, so a checkpoint can bring
//!   the value back as the same Rust type; typetag is reached through
//!   `::agent::__private::typetag`, so users need no dependency on it.
//! - Generic types are rejected at their generics: typetag registers one concrete type
//!   under one name.

use proc_macro2::TokenStream;
use quote::quote;
use syn::DeriveInput;

/// Expand the derive for `input`.
pub fn derive(input: &DeriveInput) -> syn::Result<TokenStream> {
    if !input.generics.params.is_empty() || input.generics.where_clause.is_some() {
        return Err(syn::Error::new_spanned(
            &input.generics,
            "`TypedContextData` cannot be derived for a generic type: typetag registers one concrete \
             type under one name",
        ));
    }
    let ident = &input.ident;
    Ok(quote! {
        const _: () = {
            use ::agent::__private::typetag;

            #[typetag::serde]
            #[automatically_derived]
            impl ::agent::__private::TypedContextData for #ident {
                fn __clone_box(&self) -> ::agent::__private::Box<dyn ::agent::__private::TypedContextData> {
                    ::agent::__private::Box::new(::core::clone::Clone::clone(self))
                }
                fn __as_any(&self) -> &dyn ::core::any::Any {
                    self
                }
                fn __as_any_mut(&mut self) -> &mut dyn ::core::any::Any {
                    self
                }
                fn __to_json(
                    &self,
                ) -> ::agent::__private::Result<
                    ::agent::__private::serde_json::Value,
                    ::agent::__private::serde_json::Error,
                > {
                    ::agent::__private::serde_json::to_value(self)
                }
                fn __type_name(&self) -> &'static str {
                    ::core::any::type_name::<Self>()
                }
            }
        };
    })
}

#[cfg(test)]
mod tests {
    use syn::parse_quote;

    use super::*;

    #[test]
    fn concrete_types_are_registered() {
        let out = derive(&parse_quote!(
            struct UserProfile {
                name: String,
            }
        ))
        .unwrap()
        .to_string();
        assert!(out.contains("impl :: agent :: __private :: TypedContextData for UserProfile"));
        assert!(out.contains("typetag :: serde"));
    }

    #[test]
    fn generic_types_are_rejected() {
        let err = derive(&parse_quote!(
            struct Wrapper<T> {
                value: T,
            }
        ))
        .unwrap_err();
        assert!(err.to_string().contains("generic type"));
    }
}
