# shellcheck shell=bash
# Helpers the benchmark scripts share; sourced, not run.

# absolute PATH BASE: PATH itself when absolute, else BASE/PATH.
absolute() {
    case "$1" in /*) printf '%s\n' "$1" ;; *) printf '%s\n' "$2/$1" ;; esac
}

# A YAML double-quoted scalar for a path; `$` is doubled so interpolation leaves it alone.
yaml_str() {
    local s=$1
    s=${s//\\/\\\\}
    s=${s//\"/\\\"}
    s=${s//\$/\$\$}
    printf '"%s"' "$s"
}

# demo_pipeline DATA_DIR OUT COUNT: the YAML of a pipeline that writes COUNT lines of the
# built-in `demo` source (HDFS-style blocks, seed 42, 2 % faults, so every run reads the same
# data) to the text file OUT.
demo_pipeline() {
    cat <<EOF_YAML
data_dir: $(yaml_str "$1")
sources:
  demo:
    type: demo
    rate: 0
    count: $3
    seed: 42
    fault_rate: 0.02
sinks:
  out:
    type: file
    inputs: [demo]
    path: $(yaml_str "$2")
    encoding: text
    append: false
EOF_YAML
}

# is_labelled FILE: whether FILE is a line-labelled log (loghub's BGL, Thunderbird): every
# line's first token is `-` (normal) or an upper-case category (`KERNDTLB`, `R_HDA_NR`), and
# some are `-`. A log whose every line starts with its level (`INFO ...`) is not labelled.
is_labelled() {
    awk '$1 == "-" { normal = 1 } $1 != "-" && $1 !~ /^[A-Z][A-Z0-9_]*$/ { bad = 1; exit }
        END { exit bad || !normal }' "$1"
}
