//! The dashboards: one description of their panels ([`panels`]), from which the built-in
//! page's definitions ([`page`], served as `/api/dashboards`) and the provisioned Grafana
//! dashboards ([`grafana`]) are generated, so none of them can drift from the others.

pub mod grafana;
pub(crate) mod page;
pub mod panels;
