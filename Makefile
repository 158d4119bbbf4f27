PYTHON ?= python3
# The CPU routes the figures under bench/ were measured with (opt-in: trainer.cpu_allocator, trainer.cpu_linear)
CPU_ROUTES = trainer.cpu_allocator=reuse trainer.cpu_linear=onednn

.PHONY: install train test test-fast bench report clean

install:  ## install the package (editable) with its test dependencies
	$(PYTHON) -m pip install -e ".[dev]"

train:  ## the main job: DeMT Swin-T on the built-in synthetic data, CPU-friendly default
	$(PYTHON) -m demt_exp

test:  ## the whole test suite (the README's command)
	$(PYTHON) -m pytest -q

test-fast:  ## the inner loop: tests/unit without the slow ones (real-size parity loads, a 50-step bf16 run, inductor)
	$(PYTHON) -m pytest -q tests/unit -m "not slow"

bench:  ## speed: deformable backends, linear layers, default step, DeMT/DeGMix vs plain and official, FLOP and saved-byte counts (bench/*.json), scaling plot
	$(PYTHON) -m demt_exp.bench deform --shape 8 256 16 16
	$(PYTHON) -m demt_exp.bench linear
	$(PYTHON) -m demt_exp.bench step
	$(PYTHON) -m demt_exp.bench model $(CPU_ROUTES) tasks=nyud dataset.num_semseg_classes=40 --batch 2 --size 448 576 --repeats 2 --baseline plain system-malloc official --memory-repeats 2 --profile --json bench/demt_swin_t_b2_448x576.json
	$(PYTHON) -m demt_exp.bench model $(CPU_ROUTES) encoder=degmix decoder=degmix tasks=nyud dataset.num_semseg_classes=40 --batch 2 --size 448 576 --repeats 3 --baseline plain official --memory-repeats 3 --json bench/degmix_swin_t_b2_448x576.json
	$(PYTHON) -m demt_exp.bench model $(CPU_ROUTES) tasks=nyud dataset.num_semseg_classes=40 --batch 2 --size 448 576 --repeats 2 --checkpointing --baseline system-malloc --memory-repeats 2 --json bench/demt_swin_t_b2_448x576_checkpointing.json
	$(PYTHON) -m demt_exp.bench counts tasks=nyud dataset.num_semseg_classes=40 --options --json bench/counts_demt_swin_t_b2_448x576.json
	$(PYTHON) -m demt_exp.bench counts encoder=degmix decoder=degmix tasks=nyud dataset.num_semseg_classes=40 --options --json bench/counts_degmix_swin_t_b2_448x576.json
	$(PYTHON) -m demt_exp.bench counts backbone=swin_b tasks=nyud dataset.num_semseg_classes=40 --json bench/counts_demt_swin_b_b2_448x576.json
	$(PYTHON) -m demt_exp.bench counts backbone=swin_b encoder=degmix decoder=degmix tasks=nyud dataset.num_semseg_classes=40 --json bench/counts_degmix_swin_b_b2_448x576.json
	$(PYTHON) -m demt_exp.bench scaling $(CPU_ROUTES) --sizes 256 448 640 --tasks 1 3 5 --fixed-size 256 --fixed-tasks 1 --out bench/scaling

report:  ## parameters and MACs per component, e.g. make report ARGS="backbone=swin_b tasks=nyud dataset.num_semseg_classes=40 --input-size 425 560"
	$(PYTHON) -m demt_exp.report model $(or $(ARGS),tasks=nyud dataset.num_semseg_classes=40 --input-size 425 560)

clean:  ## remove run folders and caches
	rm -rf outputs multirun .pytest_cache build *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
