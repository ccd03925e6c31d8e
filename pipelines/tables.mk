# tables.mk: the cells of each of the paper's tables, as stages of pipelines/Makefile (included by it).
# A cell is ROW|COLUMN|STAGE (~ for a space in ROW); STAGE "-" marks a cell that this version cannot compute (the
# table's notes say why), STAGE@frameF / STAGE@agg one score of a fine-tuning run's final evaluation (frame F alone,
# the ten frames' aggregate; the default is the run's final score), STAGE1&STAGE2 the ensemble of two runs. Row and column names match pipelines/paper-numbers.tsv.
row = $(word 1,$(subst :, ,$(1)))
run = $(word 2,$(subst :, ,$(1)))
mode_A := audioonly
mode_V := videoonly
mode_AV := multimodal

# Table 1: each model fine-tuned with audio (A), video (V) and both (AV) on each dataset's recipe.
T1_MODELS ?= CAV:$(PT_CAV) Vanilla~AV-MAE:$(PT_VANILLA) AV-MAE:$(PT_AVMAE) CAV-MAE:$(PT_CAVMAE) CAV-MAE~Scale+:$(PT_SCALE)
T1_DATA ?= as20k as2m vgg
CELLS_table1 = $(foreach d,$(T1_DATA),Audio-MAE|$(d)-A|$(call ft,$(PT_AUDIOMAE),$(d),$(d),audioonly) \
    Audio-MAE|$(d)-AV|$(call ft,$(PT_AUDIOMAE),$(d),$(d),audioonly)&$(call ft,$(PT_VISUALMAE),$(d),$(d),videoonly)) \
  $(foreach d,$(T1_DATA),Visual-MAE|$(d)-V|$(call ft,$(PT_VISUALMAE),$(d),$(d),videoonly)) \
  $(foreach m,$(T1_MODELS),$(foreach d,$(T1_DATA),$(foreach x,A V AV,$(call row,$(m))|$(d)-$(x)|$(call ft,$(call run,$(m)),$(d),$(d),$(mode_$(x))))))
NOTES_table1 = "Audio-MAE A-V is the paper's ensemble of the single-modal models: the mean of the Audio-MAE (A) and Visual-MAE (V) runs' per-clip probabilities (cav-finetune --predictions), scored on the evaluation split."

# Table 2: ablations, one factor at a time.
PT_C0001 := $(call pt,as2m,cav-mae,0.001,0.75,unstructured,norm,48,12,5e-5)
PT_NONORM := $(call pt,as2m,cav-mae,0.01,0.75,unstructured,nonorm,48,12,5e-5)
PT_VS := $(call pt,vgg,cav-mae,0.01,0.75,unstructured,norm,120,25,1e-4)
PT_ASVS := $(call pt,as2m+vgg,cav-mae,0.01,0.75,unstructured,norm,120,10,5e-5)
CELLS_table2a = lambda_c~0.1|as20k-AV|$(call ft,$(PT_CAVMAE_C01),as20k,as20k,multimodal) \
  lambda_c~0.01|as20k-AV|$(call ft,$(PT_CAVMAE),as20k,as20k,multimodal) \
  lambda_c~0.001|as20k-AV|$(call ft,$(PT_C0001),as20k,as20k,multimodal)
CELLS_table2b = $(foreach e,1 3 12 25,$(e)~epoch$(if $(filter 1,$(e)),,s)|as20k-AV|$(call ft,$(PT_SCALE),as20k,as20k,multimodal,$(call E,$(e))))
NOTES_table2b = "The models of epochs 1, 3 and 12 are those of the 25-epoch Scale+ run (its learning rate is the same up to there)."
CELLS_table2c = batch~48|as20k-AV|$(call ft,$(PT_CAVMAE),as20k,as20k,multimodal) \
  batch~108|as20k-AV|$(call ft,$(PT_SCALE),as20k,as20k,multimodal,$(call E,12))
NOTES_table2c = "Batch 108 is the Scale+ run at epoch 12 (the paper's 40.8 equals its Table 2b 12-epoch entry)."
CELLS_table2d = w/o~norm|as20k-AV|$(call ft,$(PT_NONORM),as20k,as20k,multimodal) \
  w/~norm|as20k-AV|$(call ft,$(PT_CAVMAE),as20k,as20k,multimodal)
CELLS_table2e = AS-2M|vgg-AV|$(call ft,$(PT_SCALE),vgg,vgg,multimodal) VS|vgg-AV|$(call ft,$(PT_VS),vgg,vgg,multimodal) \
  AS-2M+VS|vgg-AV|$(call ft,$(PT_ASVS),vgg,vgg,multimodal)
NOTES_table2e = "VS: pretrained on VGGSound alone (the reference's VGGSound script: batch 120, 25 epochs, lr 1e-4); AS-2M+VS: the Scale+ model pretrained further on VGGSound (batch 120, 10 epochs, lr 5e-5)."
CELLS_table2f = MM|as20k-AV|$(call ft,$(PT_SCALE),as20k,as20k,multimodal) \
  SM|as20k-AV|$(call ft,$(PT_SCALE),as20k,as20k,singlemodal) \
  MM+SM|as20k-AV|$(call ft,$(PT_SCALE),as20k,as20k,multimodal+singlemodal)
NOTES_table2f = "SM and MM+SM are not modes of the reference's code; cav-finetune follows the paper's text (cav-finetune(1), Fusion modes): SM feeds the head the audio and video single-modal pooled outputs side by side (a head of twice the width), MM+SM the multimodal pooled output plus the mean of the two single-modal ones."
CELLS_table2g = Missing~Modality|as20k-A|$(call ft,$(PT_SCALE),as20k,as20k,missingaudioonly) \
  Missing~Modality|as20k-V|$(call ft,$(PT_SCALE),as20k,as20k,missingvideoonly) \
  SM~Fine-tune|as20k-A|$(call ft,$(PT_SCALE),as20k,as20k,audioonly) SM~Fine-tune|as20k-V|$(call ft,$(PT_SCALE),as20k,as20k,videoonly)
NOTES_table2g = "Missing modality: the A-V fine-tuned run's final model (weight-averaged) evaluated on one modality (cav-finetune --eval-only --mode missingaudioonly / missingvideoonly)."
CELLS_table2h = $(foreach r,Middle:frame5 Aggregation:agg,$(foreach x,V AV,$(call row,$(r))|as20k-$(x)|$(call ft,$(PT_SCALE),as20k,as20k,$(mode_$(x)))@$(call run,$(r))))
NOTES_table2h = "Middle and Aggregation are the same runs' final evaluation (the weight-averaged model): frame 5 of the ten alone, and the mean of the ten frames' probabilities."
# MODE multimodal-lp: --mode multimodal --freeze-base (pipelines/stage.sh)
CELLS_table2i = SM~Ensemble|as20k-AV|$(call ft,$(PT_AUDIOMAE),as20k,as20k,audioonly-lp)&$(call ft,$(PT_VISUALMAE),as20k,as20k,videoonly-lp) \
  AV-MAE|as20k-AV|$(call ft,$(PT_AVMAE),as20k,as20k,multimodal-lp) \
  CAV-MAE|as20k-AV|$(call ft,$(PT_CAVMAE),as20k,as20k,multimodal-lp)
NOTES_table2i = "Linear probe: cav-finetune --freeze-base (the reference's freeze_base; only mlp_head trains) with the AS-20K recipe, which no reference script sets for probing. SM Ensemble: the mean of the Audio-MAE audio-only and Visual-MAE video-only probes' per-clip probabilities (cav-finetune --predictions), scored on the evaluation split."

# Tables 3 and 5: retrieval with the pretrained models, on each dataset's retrieval subset (VGGSound zero-shot).
T3_MODELS ?= Vanilla~AV-MAE:$(PT_VANILLA) AV-MAE:$(PT_AVMAE) CAV~lambda_c~0.1:$(PT_CAV_C01) CAV~lambda_c~0.01:$(PT_CAV) \
  CAV-MAE~lambda_c~0.1:$(PT_CAVMAE_C01) CAV-MAE~lambda_c~0.01:$(PT_CAVMAE) CAV-MAE~Scale+~lambda_c~0.01:$(PT_SCALE)
T3_DATA ?= as vgg
CELLS_table3 = $(foreach m,$(T3_MODELS),$(foreach d,$(T3_DATA),$(call row,$(m))|$(d)|$(call ret,$(call run,$(m)),$(d))))
CELLS_table5 = $(CELLS_table3)
NOTES_table3 = "Both directions come from the same runs: this table is visual -> audio, Table 5 audio -> visual."
NOTES_table5 = $(NOTES_table3)

ALL_TABLES := table1 table2a table2b table2c table2d table2e table2f table2g table2h table2i table3 table5
# A cell's stages: PATH, PATH@WHICH (which score of the run: tables.py) or PATH1&PATH2 (an ensemble).
cell_stage = $(filter-out -,$(foreach p,$(subst &, ,$(word 3,$(subst |, ,$(1)))),$(firstword $(subst @, ,$(p)))))
$(foreach t,$(ALL_TABLES),$(eval STAGES_$(t) = $$(foreach c,$$(CELLS_$(t)),$$(call cell_stage,$$(c)))))
# The datasets a table reads, for its coverage section.
cov_dirs = $(sort $(foreach c,$(1),$(if $(call cell_stage,$(c)),$(W)/data/$(call view_ds,$(firstword $(subst -, ,$(word 2,$(subst |, ,$(c)))))))))

$(ALL_TABLES): %: $(TABLES)/%.md
$(TABLES)/%.md: $$(STAGES_$$*) $(HERE)/tables.py $(HERE)/paper-numbers.tsv
	@mkdir -p $(@D)
	@$(MAKE) -s --no-print-directory -f $(HERE)/Makefile SCALE=full W=$(W)/full-names cost-one T=$* >$@.cost
	@$(PY) $(HERE)/tables.py table $(patsubst table%,%,$*) --out $@ --w $(W) --scale $(SCALE) \
	  $(foreach d,$(call cov_dirs,$(CELLS_$*)),--coverage $(d)) \
	  $(if $(NOTES_$*),--note $(NOTES_$*)) --note "$$(cat $@.cost)" $(foreach c,$(CELLS_$*),'$(c)'); \
	  st=$$?; rm -f $@.cost; exit $$st

.PHONY: cost-one
cost-one:
	@$(PY) $(HERE)/tables.py cost-one '$(STAGES_$(T))'
