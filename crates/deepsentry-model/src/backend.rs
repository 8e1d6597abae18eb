//! Choosing where the models run. burn dispatches on the device at run time, so one model
//! code path serves every backend; this only picks the device.

use burn::prelude::Device;
use serde::Deserialize;

/// A compute backend for the models.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// burn's pure-Rust CPU backend (the default: it measured faster than `ndarray` here).
    #[default]
    Flex,
    /// The `ndarray` CPU backend.
    Ndarray,
    /// The GPU through wgpu (Vulkan, Metal, DX12); needs a build with the `gpu` feature.
    Wgpu,
    /// The GPU when this build has it and an adapter answers, else the default CPU backend.
    Auto,
}

impl std::str::FromStr for BackendKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "flex" => Ok(Self::Flex),
            "ndarray" => Ok(Self::Ndarray),
            "wgpu" => Ok(Self::Wgpu),
            "auto" => Ok(Self::Auto),
            other => Err(format!(
                "unknown backend `{other}`; valid backends: flex, ndarray, wgpu, auto"
            )),
        }
    }
}

/// Whether this build includes the wgpu backend.
pub const GPU_COMPILED: bool = cfg!(feature = "gpu");

#[cfg(feature = "gpu")]
fn wgpu_device() -> anyhow::Result<Device> {
    use burn::prelude::Tensor;
    let device = Device::wgpu(burn::tensor::DeviceKind::DefaultDevice);
    // The device is lazy: touch it once so a missing adapter is an error here, not a panic
    // in the middle of the stream.
    let probe = device.clone();
    std::panic::catch_unwind(move || Tensor::<1>::zeros([1], &probe).into_data())
        .map_err(|_| anyhow::anyhow!("no wgpu adapter is available on this machine"))?;
    Ok(device)
}

#[cfg(not(feature = "gpu"))]
fn wgpu_device() -> anyhow::Result<Device> {
    anyhow::bail!("this build has no GPU support; rebuild with `cargo build --release -p deepsentry --features gpu`")
}

/// The device for `kind`, and the concrete backend it resolved to.
pub fn device(kind: BackendKind) -> anyhow::Result<(Device, BackendKind)> {
    #[allow(deprecated)] // burn 0.22 deprecates ndarray in favour of flex; both stay selectable
    match kind {
        BackendKind::Flex => Ok((Device::flex(), BackendKind::Flex)),
        BackendKind::Ndarray => Ok((Device::ndarray(), BackendKind::Ndarray)),
        BackendKind::Wgpu => Ok((wgpu_device()?, BackendKind::Wgpu)),
        BackendKind::Auto => match GPU_COMPILED.then(wgpu_device) {
            Some(Ok(device)) => Ok((device, BackendKind::Wgpu)),
            Some(Err(e)) => {
                tracing::info!("backend auto: {e}; using the CPU");
                device(BackendKind::default())
            }
            None => device(BackendKind::default()),
        },
    }
}
