use super::*;
use crate::backend::{self, BackendKind};

const STEPS: usize = 5;

fn config(kind: DetectorKind, embedding: usize, templates: usize) -> SequenceDetectorConfig {
    SequenceDetectorConfig {
        kind,
        input: message_vector_width(embedding, templates) + 1,
        steps: STEPS,
        hidden: 8,
        classes: templates + 2,
        members: 3,
    }
}

fn logits(
    detector: &SequenceDetector,
    windows: &[Vec<&[f32]>],
    embedding: usize,
    templates: usize,
    device: &Device,
) -> Vec<f32> {
    detector
        .forward(window_input(windows, STEPS, embedding, templates, device))
        .into_data()
        .try_into_vec::<f32>()
        .unwrap()
}

/// Each network's logits (before the ensemble's averaging, which normalizes).
fn network_logits(
    detector: &SequenceDetector,
    windows: &[Vec<&[f32]>],
    embedding: usize,
    templates: usize,
    device: &Device,
) -> Vec<Vec<f32>> {
    let input = window_input(windows, STEPS, embedding, templates, device);
    let logits: Vec<Tensor<2>> = match detector {
        SequenceDetector::Gru(gru) => vec![gru.forward(input)],
        SequenceDetector::Window(ensemble) => ensemble
            .members
            .iter()
            .map(|member| member.forward(input.clone()))
            .collect(),
    };
    logits
        .into_iter()
        .map(|l| l.into_data().try_into_vec::<f32>().unwrap())
        .collect()
}

#[test]
fn a_grown_detector_reads_known_windows_as_before() {
    let (device, _) = backend::device(BackendKind::Flex).unwrap();
    let (embedding, templates, added) = (3, 4, 2);
    for kind in [DetectorKind::Window, DetectorKind::Gru] {
        let detector = config(kind, embedding, templates).init(&device);
        let codes: Vec<Vec<f32>> = (0..templates)
            .map(|class| message_code(&[0.5, -0.25, class as f32 / 4.0], Some(class)))
            .collect();
        let window: Vec<&[f32]> = vec![&codes[2], &codes[0], &codes[3]];
        let before = network_logits(
            &detector,
            std::slice::from_ref(&window),
            embedding,
            templates,
            &device,
        );

        let grown = detector.grow(embedding, templates, added);
        let after = network_logits(&grown, &[window], embedding, templates + added, &device);

        assert_eq!(after.len(), before.len());
        let close = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-5);
        for (before, after) in before.iter().zip(&after) {
            assert_eq!(after.len(), before.len() + added);
            assert!(
                close(&after[..templates], &before[..templates]),
                "{kind:?}: {before:?} {after:?}"
            );
            assert!(
                close(&after[templates + added..], &before[templates..]),
                "{kind:?}: end and unseen keep their logits after the added classes"
            );
        }
    }
}

/// The tables compute what the dense forward pass computes, for windows that are short
/// (padded), full, longer than a window, and hold templates without an identity.
#[test]
fn the_window_tables_give_the_dense_log_probabilities() {
    let (device, _) = backend::device(BackendKind::Flex).unwrap();
    let (embedding, templates) = (3, 4);
    let SequenceDetector::Window(detector) =
        config(DetectorKind::Window, embedding, templates).init(&device)
    else {
        unreachable!("a window detector")
    };
    let code = |class: Option<usize>, x: f32| message_code(&[x, -0.5 * x, 0.25], class);
    let codes = [
        code(Some(0), 0.1),
        code(Some(3), -0.7),
        code(None, 0.9),
        code(Some(1), 0.3),
        code(None, -0.2),
        code(Some(2), 0.6),
    ];
    let windows: Vec<Vec<&[f32]>> = vec![
        vec![&codes[0]],
        vec![&codes[2], &codes[1]],
        codes[..5].iter().map(Vec::as_slice).collect(),
        codes.iter().map(Vec::as_slice).collect(),
    ];
    let tables = WindowTables::new(&detector, embedding);
    let dense = logits(
        &SequenceDetector::Window(detector.clone()),
        &windows,
        embedding,
        templates,
        &device,
    );
    let fast = |windows: &[Vec<&[f32]>]| -> Vec<f32> {
        tables
            .log_probs(&detector, windows, &device)
            .into_data()
            .try_into_vec::<f32>()
            .unwrap()
    };
    let first = fast(&windows);
    assert_eq!(first.len(), dense.len());
    for (f, d) in first.iter().zip(&dense) {
        assert!((f - d).abs() < 1e-4, "{first:?}\n{dense:?}");
    }
    // Again, from the rows each code left in the tables: the same.
    assert_eq!(fast(&windows), first);
    // A code at an address another code had before is read anew.
    let mut moved = codes[1].clone();
    let before = fast(&[vec![&codes[0], &moved]]);
    moved.copy_from_slice(&codes[3]);
    let after = fast(&[vec![&codes[0], &moved]]);
    assert_eq!(after, fast(&[vec![&codes[0], &codes[3]]]));
    assert_ne!(before, after);
}
