//! Models and helpers the fuzz targets share: each target feeds structured input to
//! one public API and checks the answer against a model written here, not only for
//! panics. A module per subject.

pub mod arm;
pub mod codegen;
pub mod firmware;
pub mod gic;
pub mod riscv;
pub mod space;
pub mod vm;
pub mod x86;
