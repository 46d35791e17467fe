"""Publishing a training run: Hub-ready model folders, model cards, plots, and pushes to the Hub.

    python export.py runs/124M --out export/124M                    # our architecture + code (trust_remote_code)
    python export.py runs/124M --out export/124M-gpt2 --format gpt2  # stock transformers GPT-2, no remote code
    python -m publish.plots runs/124M/metrics.jsonl log.txt --out curves.png

Modules, one job each:
    model_source     where a model given by path is: a run folder's newest good checkpoint, a checkpoint, a model
                     folder; with its metrics and run config (docs/CONTRACTS.md layout)
    model_weights    from_pretrained that refuses weights missing for, or of other shapes than, the folder's config
                     (export, train.py --init_from and eval all load through it)
    metrics          read metrics.jsonl and build-nanogpt log.txt into one series type
    references       the published numbers the plots and the card compare against, per HellaSwag scorer
    plots            the curves (PNG), also a command
    model_card       the README.md model card (huggingface_hub ModelCard / ModelCardData / EvalResult)
    export_model     writing the weights, config, code, tokenizer and generation config
    local_paths      what the export publishes of local paths: absolute ones cut to their last name
    hub              create_repo + upload_folder, dry-run listing, token and error handling
    checkpoint_sync  background upload of each committed checkpoint during training (CheckpointUploader)
"""
