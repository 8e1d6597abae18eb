//! The model bundle: a directory with `model.yml` (format version, sizes, `sequence_length`,
//! the template vocabulary, training statistics) and the weights of both models as burn
//! records. Loading checks the format version and every size, and says what does not match.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use burn::module::Module;
use burn::prelude::*;

use crate::autoencoder::TextAutoencoder;
use crate::backend::{self, BackendKind};
use crate::detector::{message_code, window_input, SequenceDetector, WindowTables};
use crate::features::hashed_features;
use crate::invariants::{Invariant, SessionTally};
use crate::normalize::{
    instance_of, variant_allowance, variant_distance, wildcard_forms, WILDCARD,
};
use crate::novelty::NoveltyStats;
use crate::scorer::{Embedded, SequenceModel};

mod metadata;

pub use metadata::{ClassPrior, ModelMetadata, ModelSizes, TrainingSummary};

/// The bundle format this build writes and reads.
pub const FORMAT_VERSION: u32 = 3;
/// The normalizer's masking rules version; a model trained with other rules sees other
/// templates.
pub const NORMALIZER_VERSION: u32 = 2;

const METADATA_FILE: &str = "model.yml";
const AUTOENCODER_FILE: &str = "autoencoder.bpk";
/// Training lines a bundle keeps so that an update (`train --from`) trains on some of the
/// old logs next to the new ones, and does not forget sequences only the old logs held.
pub const REPLAY_FILE: &str = "replay.log";
const DETECTOR_FILE: &str = "detector.bpk";
/// The training sessions' template counts, kept so that an update mines count invariants
/// over old and new sessions together (see [`SessionTally`]).
pub const SESSIONS_FILE: &str = "sessions.json";

/// The session tally the bundle in `dir` keeps (empty where it keeps none: a model of one
/// stream, or one made before bundles kept it), checked against its `templates`.
pub fn read_session_tally(dir: &Path, templates: usize) -> anyhow::Result<SessionTally> {
    let path = dir.join(SESSIONS_FILE);
    let text = if is_builtin(dir) {
        String::from_utf8_lossy(BUILTIN_SESSIONS).into_owned()
    } else {
        match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(SessionTally::default())
            }
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    };
    let tally: SessionTally = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a valid session tally", path.display()))?;
    let classes = tally
        .counts
        .iter()
        .flat_map(|row| &row.counts)
        .chain(tally.open.iter().flat_map(|s| &s.counts));
    if let Some((class, _)) = classes.into_iter().find(|(class, _)| *class >= templates) {
        anyhow::bail!(
            "{}: names template {class}, but the model has {templates} templates",
            path.display()
        );
    }
    Ok(tally)
}

/// The model name that selects the bundle built into the binary: the shipped
/// `models/default`, so the default pipeline runs from any directory. A directory of that name
/// is `./builtin`.
pub const BUILTIN: &str = "builtin";

/// The files of the built-in bundle.
const BUILTIN_FILES: [(&str, &[u8]); 3] = [
    (
        METADATA_FILE,
        include_bytes!("../../../models/default/model.yml"),
    ),
    (
        AUTOENCODER_FILE,
        include_bytes!("../../../models/default/autoencoder.bpk"),
    ),
    (
        DETECTOR_FILE,
        include_bytes!("../../../models/default/detector.bpk"),
    ),
];

/// The built-in bundle's session tally: read by an update of it only, so not part of what
/// fingerprints it.
const BUILTIN_SESSIONS: &[u8] = include_bytes!("../../../models/default/sessions.json");

/// Whether `dir` names the built-in bundle (see [`BUILTIN`]).
pub fn is_builtin(dir: &Path) -> bool {
    dir == Path::new(BUILTIN)
}

/// The built-in bundle's files, in a fixed order (to fingerprint it).
pub fn builtin_files() -> impl Iterator<Item = (&'static str, &'static [u8])> {
    BUILTIN_FILES.into_iter()
}

/// Loads a module's weights from the bundle file `name` in `dir` (or the built-in one).
fn load_weights<M: Module>(module: M, dir: &Path, name: &str) -> Result<M, String> {
    if is_builtin(dir) {
        let bytes = BUILTIN_FILES
            .iter()
            .find(|(file, _)| *file == name)
            .map(|(_, bytes)| bytes.to_vec())
            .expect("every bundle file is built in");
        let record =
            burn::store::ModuleRecord::from_bytes(burn::tensor::Bytes::from_bytes_vec(bytes))
                .map_err(|e| e.to_string())?;
        module.try_load_record(record).map_err(|e| e.to_string())
    } else {
        module
            .try_load_file(dir.join(name))
            .map_err(|e| e.to_string())
    }
}

/// A model ready to score: both networks on a device, the vocabulary, the statistics.
#[derive(Debug)]
pub struct LoadedModel {
    /// The bundle's metadata.
    pub metadata: ModelMetadata,
    /// The text autoencoder.
    pub autoencoder: TextAutoencoder,
    /// The sequence detector.
    pub detector: SequenceDetector,
    /// Where they run.
    pub device: Device,
    /// The backend the device resolved to.
    pub backend: BackendKind,
    /// A sample of the training lines, for the bundle to keep for updates (see
    /// [`REPLAY_FILE`]); set by training, empty after loading (the file is read by an
    /// update only).
    pub replay: Vec<String>,
    /// The training sessions' template counts, for the bundle to keep for updates (see
    /// [`SESSIONS_FILE`]); set by training, empty after loading (read by an update only,
    /// with [`read_session_tally`]).
    pub session_tally: SessionTally,
    /// The window network's first layer, split for scoring (absent for a GRU).
    window_tables: Option<WindowTables>,
    vocabulary: HashMap<String, usize>,
    /// Whether a template holds a [`WILDCARD`] (then instances are looked up by their forms).
    has_wildcards: bool,
    /// The training templates' classes by their number of words (to find the training
    /// template a new one is a variant of).
    by_length: HashMap<usize, Vec<usize>>,
}

impl LoadedModel {
    /// Assembles a model from its parts (after training, or after loading).
    pub fn new(
        metadata: ModelMetadata,
        autoencoder: TextAutoencoder,
        detector: SequenceDetector,
        device: Device,
        backend: BackendKind,
    ) -> Self {
        let vocabulary: HashMap<String, usize> = metadata
            .templates
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i))
            .collect();
        let window_tables = match &detector {
            SequenceDetector::Window(window) => {
                Some(WindowTables::new(window, metadata.sizes.embedding_size))
            }
            SequenceDetector::Gru(_) => None,
        };
        let mut model = Self {
            metadata,
            autoencoder,
            detector,
            device,
            backend,
            replay: Vec::new(),
            session_tally: SessionTally::default(),
            window_tables,
            has_wildcards: vocabulary
                .keys()
                .any(|t| t.split(' ').any(|w| w == WILDCARD)),
            vocabulary,
            by_length: HashMap::new(),
        };
        for (class, template) in model.metadata.templates.iter().enumerate() {
            let words = template.split(' ').count();
            model.by_length.entry(words).or_default().push(class);
        }
        model
    }

    /// The autoencoder's embeddings (flat, `embedding_size` each) and reconstruction errors.
    fn encode(&self, templates: &[&str]) -> (Vec<f32>, Vec<f32>) {
        let dims = self.metadata.sizes.feature_dims;
        let features: Vec<f32> = templates
            .iter()
            .flat_map(|t| hashed_features(t, dims))
            .collect();
        let input = Tensor::<2>::from_data(
            TensorData::new(features, [templates.len(), dims]),
            &self.device,
        );
        let (embedding, error) = self.autoencoder.forward(input);
        let embedding = embedding
            .into_data()
            .try_into_vec::<f32>()
            .expect("embeddings are f32");
        let error = error
            .into_data()
            .try_into_vec::<f32>()
            .expect("errors are f32");
        (embedding, error)
    }

    /// The class of a training template, if `template` is one or an instance of one with a
    /// [`WILDCARD`] (the same words but there).
    pub fn class_of(&self, template: &str) -> Option<usize> {
        if let Some(&class) = self.vocabulary.get(template) {
            return Some(class);
        }
        if !self.has_wildcards {
            return None;
        }
        let words: Vec<&str> = template.split(' ').collect();
        let class = wildcard_forms(&words).find_map(|(_, form)| {
            let class = self.vocabulary.get(&form).copied()?;
            instance_of(&form, &words).then_some(class)
        });
        class
    }

    /// The training template `template` is a variant of (see
    /// [`crate::normalize::variant_distance`]), the closest first; checked only where the
    /// detector has no class for the template.
    pub fn variant_of(&self, template: &str) -> Option<usize> {
        let words: Vec<&str> = template.split(' ').collect();
        let allowed = variant_allowance(words.len())?;
        self.by_length
            .get(&words.len())?
            .iter()
            .filter_map(|&class| {
                variant_distance(&self.metadata.templates[class], &words, allowed)
                    .map(|d| (d, class))
            })
            .min()
            .map(|(_, class)| class)
    }

    /// Loads the bundle in `dir` onto `backend`.
    pub fn load(dir: &Path, backend: BackendKind) -> anyhow::Result<Self> {
        let metadata_path = dir.join(METADATA_FILE);
        let text = if is_builtin(dir) {
            String::from_utf8_lossy(BUILTIN_FILES[0].1).into_owned()
        } else {
            std::fs::read_to_string(&metadata_path).with_context(|| {
                format!(
                    "cannot read {} (is `{}` a model directory made by `deepsentry train`?)",
                    metadata_path.display(),
                    dir.display()
                )
            })?
        };
        let metadata: ModelMetadata = serde_yaml::from_str(&text).with_context(|| {
            format!(
                "{} is not a valid model description",
                metadata_path.display()
            )
        })?;
        anyhow::ensure!(
            metadata.format_version == FORMAT_VERSION,
            "{}: format_version is {}, this build reads version {FORMAT_VERSION}",
            metadata_path.display(),
            metadata.format_version
        );
        anyhow::ensure!(
            metadata.normalizer_version == NORMALIZER_VERSION,
            "{}: normalizer_version is {}, this build normalizes with version \
             {NORMALIZER_VERSION}; retrain the model",
            metadata_path.display(),
            metadata.normalizer_version
        );
        if let Some((class, _)) = metadata
            .invariants
            .iter()
            .flat_map(|i| &i.terms)
            .find(|(class, _)| *class >= metadata.templates.len())
        {
            anyhow::bail!(
                "{}: an invariant names template {class}, but the model has {} templates",
                metadata_path.display(),
                metadata.templates.len()
            );
        }

        anyhow::ensure!(
            metadata.prior.probabilities.is_empty()
                || metadata.prior.probabilities.len() == metadata.classes(),
            "{}: the class prior has {} entries, the model has {} classes",
            metadata_path.display(),
            metadata.prior.probabilities.len(),
            metadata.classes()
        );
        anyhow::ensure!(
            (0.0..=1.0).contains(&metadata.prior.weight),
            "{}: the class prior's weight must be between 0 and 1",
            metadata_path.display()
        );
        metadata.sizes.check().with_context(|| {
            format!(
                "{}: the model's sizes are not usable",
                metadata_path.display()
            )
        })?;
        if let Some(key) = &metadata.training.session_key {
            regex::Regex::new(key).with_context(|| {
                format!(
                    "{}: the session key is not a valid regex",
                    metadata_path.display()
                )
            })?;
        }
        let (device, backend) = backend::device(backend)?;
        let sizes = &metadata.sizes;
        let autoencoder = load_weights(
            metadata.autoencoder_config().init(&device),
            dir,
            AUTOENCODER_FILE,
        )
        .map_err(|e| {
            anyhow::anyhow!(
                "{}: the weights do not match model.yml (feature_dims {}, autoencoder_hidden \
                     {}, embedding_size {}): {e}",
                dir.join(AUTOENCODER_FILE).display(),
                sizes.feature_dims,
                sizes.autoencoder_hidden,
                sizes.embedding_size
            )
        })?;
        let config = metadata.detector_config();
        let path = dir.join(DETECTOR_FILE);
        let detector = match config.init(&device) {
            SequenceDetector::Gru(gru) => {
                load_weights(gru, dir, DETECTOR_FILE).map(SequenceDetector::Gru)
            }
            SequenceDetector::Window(window) => {
                load_weights(window, dir, DETECTOR_FILE).map(SequenceDetector::Window)
            }
        }
        .map_err(|e| {
            anyhow::anyhow!(
                "{}: the weights do not match model.yml (detector {:?} x{}, embedding_size {}, \
                 detector_hidden {}, sequence_length {}, {} classes = {} templates + end + \
                 unknown): {e}",
                path.display(),
                sizes.detector,
                sizes.detector_members,
                sizes.embedding_size,
                sizes.detector_hidden,
                sizes.sequence_length,
                metadata.classes(),
                metadata.templates.len()
            )
        })?;
        // The replay sample stays on disk: only an update reads it (`train --from`), and
        // scoring never needs it.
        Ok(Self::new(metadata, autoencoder, detector, device, backend))
    }

    /// Writes the bundle into `dir` (created if needed), with the replay sample when the
    /// model has one; a sample left in `dir` by an earlier bundle is removed otherwise.
    pub fn save(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let yaml = serde_yaml::to_string(&self.metadata)?;
        let header = "# DeepSentry model bundle: sizes, template vocabulary and training \
                      statistics.\n# The weights are in autoencoder.bpk and detector.bpk.\n";
        std::fs::write(dir.join(METADATA_FILE), format!("{header}{yaml}"))
            .with_context(|| format!("cannot write {}", dir.join(METADATA_FILE).display()))?;
        let files: [(PathBuf, anyhow::Result<()>); 2] = [
            (
                dir.join(AUTOENCODER_FILE),
                self.autoencoder
                    .clone()
                    .save_file(dir.join(AUTOENCODER_FILE))
                    .map_err(|e| anyhow::anyhow!("{e}")),
            ),
            (
                dir.join(DETECTOR_FILE),
                // The network itself, not the enum around it: a GRU bundle's record stays
                // what it was before the window network existed.
                match &self.detector {
                    SequenceDetector::Gru(gru) => gru.clone().save_file(dir.join(DETECTOR_FILE)),
                    SequenceDetector::Window(window) => {
                        window.clone().save_file(dir.join(DETECTOR_FILE))
                    }
                }
                .map_err(|e| anyhow::anyhow!("{e}")),
            ),
        ];
        for (path, result) in files {
            result.with_context(|| format!("cannot write {}", path.display()))?;
        }
        let sessions = dir.join(SESSIONS_FILE);
        if self.session_tally.is_empty() {
            let _ = std::fs::remove_file(&sessions);
        } else {
            std::fs::write(&sessions, serde_json::to_string(&self.session_tally)?)
                .with_context(|| format!("cannot write {}", sessions.display()))?;
        }
        let replay = dir.join(REPLAY_FILE);
        if self.replay.is_empty() {
            let _ = std::fs::remove_file(&replay);
        } else {
            let mut text = self.replay.join("\n");
            text.push('\n');
            std::fs::write(&replay, text)
                .with_context(|| format!("cannot write {}", replay.display()))?;
        }
        Ok(())
    }
}

impl SequenceModel for LoadedModel {
    fn sequence_length(&self) -> usize {
        self.metadata.sizes.sequence_length
    }

    fn joined_lines(&self) -> bool {
        self.metadata.training.joined_lines
    }

    fn end_class(&self) -> usize {
        self.metadata.templates.len()
    }

    fn embed(&self, templates: &[&str]) -> Vec<Embedded> {
        let classes: Vec<(Option<usize>, bool)> = templates
            .iter()
            .map(|template| match self.class_of(template) {
                Some(class) => (Some(class), false),
                None => match self.variant_of(template) {
                    Some(class) => {
                        tracing::trace!(template, nearest = %self.metadata.templates[class], "variant");
                        (Some(class), true)
                    }
                    None => (None, false),
                },
            })
            .collect();
        // An instance of a training template with a field is encoded as that template, as in
        // training.
        let texts: Vec<&str> = templates
            .iter()
            .zip(&classes)
            .map(|(template, &(class, variant))| match class {
                Some(class) if !variant => self.metadata.templates[class].as_str(),
                _ => template,
            })
            .collect();
        let (embedding, error) = self.encode(&texts);
        let size = self.metadata.sizes.embedding_size;
        embedding
            .chunks(size)
            .zip(classes)
            .zip(error)
            .map(|((embedding, (class, variant)), error)| Embedded {
                vector: message_code(embedding, class),
                error,
                class,
                variant,
            })
            .collect()
    }

    fn log_probs(&self, windows: &[Vec<&[f32]>]) -> Vec<Vec<f32>> {
        let sizes = &self.metadata.sizes;
        // Both give log-probabilities already.
        let log_probs = match (&self.detector, &self.window_tables) {
            (SequenceDetector::Window(window), Some(tables)) => {
                tables.log_probs(window, windows, &self.device)
            }
            (detector, _) => detector.forward(window_input(
                windows,
                sizes.sequence_length,
                sizes.embedding_size,
                self.metadata.templates.len(),
                &self.device,
            )),
        };
        let classes = self.metadata.classes();
        log_probs
            .into_data()
            .try_into_vec::<f32>()
            .expect("log-probabilities are f32")
            .chunks(classes)
            .map(<[f32]>::to_vec)
            .collect()
    }

    fn mixed(&self, class: usize, log_p: f32) -> f32 {
        self.metadata.prior.mixed(class, log_p)
    }

    fn prior(&self, class: usize) -> Option<f32> {
        self.metadata.prior.probabilities.get(class).copied()
    }

    fn score_floor(&self) -> f64 {
        self.metadata.training.score_floor
    }

    fn novelty(&self) -> &NoveltyStats {
        &self.metadata.novelty
    }

    fn judges_session_ends(&self) -> bool {
        self.metadata.training.learned_session_ends
    }

    fn invariants(&self) -> &[Invariant] {
        &self.metadata.invariants
    }

    fn templates(&self) -> &[String] {
        &self.metadata.templates
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detector::DetectorKind;

    /// `builtin` loads the shipped bundle from the binary: the same model as the files, found
    /// from any directory.
    #[test]
    fn the_builtin_bundle_is_the_shipped_one() {
        let builtin = LoadedModel::load(Path::new(BUILTIN), BackendKind::Flex).unwrap();
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/default");
        let files = LoadedModel::load(&shipped, BackendKind::Flex).unwrap();
        assert_eq!(builtin.metadata, files.metadata);
        let codes = |model: &LoadedModel| {
            model
                .embed(&["<NUM> INFO dfs.DataNode: Receiving block <BLK>"])
                .remove(0)
                .vector
        };
        assert_eq!(codes(&builtin), codes(&files));
        let templates = files.metadata.templates.len();
        let tally = read_session_tally(Path::new(BUILTIN), templates).unwrap();
        assert!(
            !tally.counts.is_empty(),
            "an update of it mines over its sessions too"
        );
        assert_eq!(tally, read_session_tally(&shipped, templates).unwrap());
    }

    #[test]
    fn zero_or_absurd_sizes_are_refused() {
        let good = ModelSizes {
            feature_dims: 512,
            autoencoder_hidden: 64,
            embedding_size: 16,
            detector_hidden: 128,
            sequence_length: 10,
            detector: DetectorKind::Window,
            detector_members: 5,
        };
        assert!(good.check().is_ok());
        let zero = ModelSizes {
            embedding_size: 0,
            ..good.clone()
        };
        assert!(zero
            .check()
            .unwrap_err()
            .to_string()
            .contains("embedding_size"));
        let huge = ModelSizes {
            detector_hidden: usize::MAX,
            ..good
        };
        assert!(huge.check().is_err());
    }
}
