#!/bin/bash
# stage.sh: one stage of the paper's tables (pipelines/Makefile, cav-tables(7)), named by its settings so that
# two tables sharing a stage share its output:
#   stage.sh pretrain W NAME        NAME = DATA_VARIANT_c<lambda_c>_m<mask ratio>_<mask mode>_<norm|nonorm>_b<B>_e<E>_lr<LR>
#                                   -> W/pt/NAME (cav-pretrain's run directory) and W/pt/NAME/done
#   stage.sh finetune W PT/ep<E>_<DATA>_<RECIPE>_<MODE>
#                                   -> W/ft/PT/... (cav-finetune from W/pt/PT/models/audio_model.E) and .../done;
#                                   MODE multimodal, audioonly, videoonly (these two with --predictions),
#                                   singlemodal, multimodal+singlemodal, or missingaudioonly / missingvideoonly:
#                                   the final model of the multimodal run of the same name evaluated on one
#                                   modality (--eval-only); MODE-lp: that mode, linear probing (--freeze-base)
#   stage.sh retrieval W PT/ep<E>_<DATA>
#                                   -> W/ret/PT/ep<E>_<DATA>.csv (cav-embed | cav-recall) and .ranks.csv
# A training stage resumes from its newest complete checkpoint (cav-pretrain/cav-finetune --resume) after a
# crash or a kill; a directory without one is the start of a run that never checkpointed and is started afresh,
# and so is a fine-tuning run that mixed fbanks where its shards now hold waveforms (see finetune below).
# The done file is written last, so Make reruns an unfinished stage and skips a finished one.
# Environment (from the Makefile): DATA_DIR_<DATA> (the shards of a dataset: train.h5, eval.h5, ret.h5),
# SCALE (mini or full), MODEL (tiny or base), CONTRAST_GROUPS (contrast groups), LAUNCH (e.g. "mpirun -np 4"),
# DEVICE (passed as --device when set), THREADS, SAVE_EVERY, the recipes' PT_*/FT_* settings (see the Makefile).
set -euo pipefail
kind=$1 W=$2 name=$3
say() { echo "stage: $*" >&2; }
die() { say "$*"; exit 2; }
IFS=_ read -r -a F <<<"${name##*/}"
dev=()
[ -n "${DEVICE:-}" ] && dev=(--device "$DEVICE")
launch=()
[ -n "${LAUNCH:-}" ] && read -r -a launch <<<"$LAUNCH"
export OMP_NUM_THREADS=${THREADS:-${OMP_NUM_THREADS:-2}} OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}

shards() {  # shards DATA SPLIT: the shard of a split of a prepared dataset
    local v="DATA_DIR_${1//-/_}"
    [ -n "${!v:-}" ] || die "no dataset $1 (set $v)"
    [ -f "${!v}/$2.h5" ] || die "${!v}/$2.h5: missing (prepare the dataset first)"
    echo "${!v}/$2.h5"
}

train() {  # train DIR TOOL ARGS...: a fresh run, or --resume from the newest complete checkpoint
    local dir=$1 tool=$2
    shift 2
    local resume=()
    if compgen -G "$dir/checkpoints/*/COMPLETE" >/dev/null; then
        resume=(--resume)
        say "$tool: resuming $dir"
    else
        rm -rf "$dir"
        say "$tool: $dir"
    fi
    mkdir -p "$(dirname "$dir")"
    "${launch[@]}" "$tool" "${resume[@]}" "${dev[@]}" "$@" -o "$dir" >>"$dir.log" 2>&1 ||
        { st=$?; say "$tool failed (exit $st), log $dir.log:"; tail -5 "$dir.log" >&2; exit $st; }
}

case $kind in
pretrain)
    [ ${#F[@]} -eq 9 ] || die "pretrain name $name: expected DATA_VARIANT_cX_mX_MODE_NORM_bN_eN_lrX"
    data=${F[0]} variant=${F[1]} c=${F[2]#c} m=${F[3]#m} mode=${F[4]} norm=${F[5]} b=${F[6]#b} e=${F[7]#e} lr=${F[8]#lr}
    args=(--variant "$variant" --model "${MODEL:-tiny}" -b "$b" -e "$e" --lr "$lr" --mask-ratio-a "$m"
          --mask-ratio-v "$m" --mask-mode "$mode" --contrast-groups "${CONTRAST_GROUPS:-4}" --seed "${SEED:-1}"
          --save-every "${SAVE_EVERY:-1000}" --log-every "${LOG_EVERY:-100}")
    case $variant in cav-mae | cav) args+=(--contrast-weight "$c") ;; esac
    [ "$norm" = nonorm ] && args+=(--no-norm-pix-loss)
    # a pretraining continued on another dataset (Table 2e, AS-2M+VS): DATA is FIRST+SECOND, and the start is
    # the last model of the run PT_CONTINUE (the Scale+ run on FIRST)
    if [[ $data == *+* ]]; then
        [ -n "${PT_CONTINUE:-}" ] || die "$name: PT_CONTINUE not set"
        last=$(ls "$W/pt/$PT_CONTINUE/models"/audio_model.*.safetensors | sort -t. -k2 -n | tail -1)
        args+=(--init "$last")
        data=${data#*+}
    elif [ -n "${PT_INIT:-}" ]; then
        args+=(--init-from-mae "$PT_INIT")
    fi
    train "$W/pt/$name" cav-pretrain "${args[@]}" ${PT_EXTRA:-} --eval "$(shards "$data" eval)" "$(shards "$data" train)"
    touch "$W/pt/$name/done"
    ;;
finetune)
    pt=${name%%/*}
    [ ${#F[@]} -eq 4 ] || die "finetune name $name: expected PT/epE_DATA_RECIPE_MODE"
    ep=${F[0]#ep} data=${F[1]} recipe=${F[2]} mode=${F[3]}
    v="FT_${recipe//-/_}"
    [ -n "${!v:-}" ] || die "unknown fine-tuning recipe $recipe (set $v)"
    read -r -a rargs <<<"${!v}"
    case $mode in *-lp) mode=${mode%-lp} rargs+=(--freeze-base) ;; esac
    # the single-stream variants have only joint layers (cav-pretrain(1), Variants): so has their classifier
    IFS=_ read -r -a P <<<"$pt"
    case ${P[1]} in vanilla-av-mae | audio-mae | visual-mae) rargs+=(--set modality_specific_depth=0) ;; esac
    label_dim=$(cat "$(dirname "$(shards "$data" train)")/label-dim")
    case $mode in
    missingaudioonly | missingvideoonly)
        # evaluation only (cav-finetune --eval-only): the model that the multimodal run of the same name
        # evaluated at its end (its final_eval.json), given one modality
        mm=$W/ft/$pt/ep${ep}_${data}_${recipe}_multimodal
        [ -f "$mm/final_eval.json" ] || die "$mm/final_eval.json: missing (the multimodal run did not finish)"
        init=$(/usr/bin/python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["model"])' \
            "$mm/final_eval.json")
        [ -f "$init" ] || die "$init (from $mm/final_eval.json): missing"
        out=$W/ft/$name
        rm -rf "$out"
        mkdir -p "$out"
        say "cav-finetune --eval-only: $out"
        # one process (--eval-only does not run under LAUNCH)
        cav-finetune --eval-only "${dev[@]}" --model "${MODEL:-tiny}" --mode "$mode" --init "$init" \
            --label-dim "$label_dim" "${rargs[@]}" --wa-start 0 --wa-end 0 ${FT_EXTRA:-} \
            --eval "$(shards "$data" eval)" -o "$out" >>"$out.log" 2>&1 ||
            { st=$?; say "cav-finetune failed (exit $st), log $out.log:"; tail -5 "$out.log" >&2; exit $st; }
        touch "$out/done"
        exit 0
        ;;
    multimodal | audioonly | videoonly | singlemodal | multimodal+singlemodal)
        init=$W/pt/$pt/models/audio_model.$ep.safetensors ;;
    *) die "unknown mode $mode" ;;
    esac
    [ -f "$init" ] || die "$init: missing"
    # the single-modal runs keep their per-clip probabilities for the tables' ensembles (tables.mk, SM Ensemble)
    case $mode in audioonly | videoonly) rargs+=(--predictions) ;; esac
    # A run whose mixup mixed fbanks (cav-finetune's warning: shards of an earlier prepare.py, without waveforms)
    # is not resumed on shards that now hold them: it starts afresh, its old log kept beside.
    dir=$W/ft/$name train_shard=$(shards "$data" train)
    if [ -e "$dir.log" ] && grep -q 'holds no wave: mixup mixes its fbank' "$dir.log" &&
        /usr/bin/python3 -c 'import h5py, sys; sys.exit("wave" not in h5py.File(sys.argv[1], "r"))' "$train_shard"; then
        say "cav-finetune: $dir mixed fbanks (its shards had no waveform); starting afresh (old log: $dir.fbank-mixup.log)"
        rm -rf "$dir"
        mv "$dir.log" "$dir.fbank-mixup.log"
    fi
    train "$W/ft/$name" cav-finetune --model "${MODEL:-tiny}" --mode "$mode" --init "$init" \
        --label-dim "$label_dim" "${rargs[@]}" --seed "${SEED:-1}" \
        --save-every "${SAVE_EVERY:-1000}" --log-every "${LOG_EVERY:-100}" ${FT_EXTRA:-} \
        --eval "$(shards "$data" eval)" "$train_shard"
    touch "$W/ft/$name/done"
    ;;
retrieval)
    pt=${name%%/*}
    [ ${#F[@]} -eq 2 ] || die "retrieval name $name: expected PT/epE_DATA"
    ep=${F[0]#ep} data=${F[1]}
    out=$W/ret/$name
    mkdir -p "$(dirname "$out")"
    cav-embed --model "$W/pt/$pt/models/audio_model.$ep.safetensors" -b "${EMBED_BATCH:-8}" ${EMBED_EXTRA:-} \
        -o "$out.emb.tmp.h5" "$(shards "$data" ret)" 2>"$out.log"
    cav-recall --dataset "$data" --ranks "$out.ranks.csv" -o "$out.tmp.csv" "$out.emb.tmp.h5" 2>>"$out.log"
    mv "$out.emb.tmp.h5" "$out.emb.h5"
    mv "$out.tmp.csv" "$out.csv"
    ;;
*) say "unknown stage kind $kind"; exit 1 ;;
esac
