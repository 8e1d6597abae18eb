//! `deepsentry train` and `deepsentry templates`: building a model bundle from normal logs,
//! and the templates the normalizer makes of them.

use std::path::PathBuf;

use deepsentry_model::train::defaults;

use crate::cli::TrainArgs;

pub(crate) fn train(args: TrainArgs) -> anyhow::Result<()> {
    let options = deepsentry_model::TrainOptions {
        lines: args.format.line_settings(&args.input)?,
        inputs: args.input,
        max_lines: args.max_lines,
        max_windows: args.max_windows,
        session_key: deepsentry_model::session_key::SessionKeySpec::parse(Some(&args.session_key)),
        sequence_length: args.sequence_length,
        embedding_size: args.embedding_size,
        epochs: args.epochs.unwrap_or(if args.from.is_some() {
            defaults::UPDATE_EPOCHS
        } else {
            defaults::EPOCHS
        }),
        seed: args.seed,
        backend: args.backend,
        holdout: args.holdout,
        floor_margin: args.floor_margin,
        order_noise: args.order_noise,
        detector_hidden: args.detector_hidden,
        detector: args.detector,
        detector_members: args.detector_members,
        invariants: !args.no_invariants,
        replay: !args.no_replay,
        progress: std::io::IsTerminal::is_terminal(&std::io::stderr()),
        from: args.from,
        ..Default::default()
    };
    let model = deepsentry_model::train(&options)?;
    model.save(&args.out)?;
    let t = &model.metadata.training;
    println!("model written to {}", args.out.display());
    println!(
        "  lines {} | sessions {} ({} held out) | templates {}",
        t.lines,
        t.sessions,
        t.held_out_sessions,
        model.metadata.templates.len()
    );
    println!(
        "  autoencoder loss {:.5} | detector loss {:.4} nats",
        t.autoencoder_loss, t.detector_loss
    );
    println!(
        "  held-out scores: mean {:.3}, std {:.3}; session maxima: 99th percentile {:.3}, \
         highest {:.3} -> threshold floor {:.3}",
        t.score_mean, t.score_std, t.score_p99, t.score_max, t.score_floor
    );
    println!("  count invariants: {}", model.metadata.invariants.len());
    println!(
        "  trained in {:.1} s on {:?}",
        t.duration_secs, model.backend
    );
    Ok(())
}

pub(crate) fn print_templates(inputs: &[PathBuf]) -> anyhow::Result<()> {
    use std::io::{BufRead, Write};
    // Templates in the order first seen (training folds fields in that order) and their lines.
    let mut templates: Vec<String> = Vec::new();
    let mut counts: Vec<u64> = Vec::new();
    let mut ids: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    let mut scratch = String::new();
    for path in inputs {
        let file = deepsentry_core::lines::open_log(path)
            .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", path.display()))?;
        for line in std::io::BufReader::new(file).split(b'\n') {
            let line = line?;
            let text = String::from_utf8_lossy(&line);
            let text = text.trim_end_matches('\r');
            if text.is_empty() {
                continue;
            }
            deepsentry_model::normalize::template_into(text, &mut scratch);
            let id = *ids.entry(scratch.clone()).or_insert_with(|| {
                templates.push(scratch.clone());
                counts.push(0);
                templates.len() - 1
            });
            counts[id] += 1;
        }
    }
    // As training makes them: words that take many values in one statement folded to `<*>`.
    let index = deepsentry_model::normalize::fold_variable_words(&mut templates, 0);
    let mut folded = vec![0; templates.len()];
    for (old, &new) in index.iter().enumerate() {
        folded[new as usize] += counts[old];
    }
    let mut sorted: Vec<(String, u64)> = templates.into_iter().zip(folded).collect();
    sorted.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let mut out = std::io::stdout().lock();
    for (template, count) in sorted {
        let severity = deepsentry_model::severity::severity_of(&template);
        match writeln!(out, "{count}\t{}\t{template}", severity.name()) {
            // `deepsentry templates ... | head`: the reader has seen enough.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
            other => other?,
        }
    }
    Ok(())
}
