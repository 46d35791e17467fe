"""Training data: text sources -> GPT-2 token shards (`data.prepare`) -> training / validation batches
(`data.loader`). See data/README.md for the commands, the folder format and the validation rule.

    tokenizer.py       the offline GPT-2 tokenizer (gpt2_tokenizer, encode_document, EOT_ID, fingerprint)
    sources.py         SOURCE string -> datasets dataset (Hub, local parquet/jsonl/txt, builtin:pydocs)
    builtin_corpus.py  builtin:pydocs, the offline quick-start corpus (Python's own documentation)
    encode.py          the batched datasets.map tokenization function (tiktoken or HF backend, same ids)
    shards.py          on-disk format: uint16 .npy shards, manifest.json, atomic writes, checks
    prepare.py         `python -m data.prepare SOURCE --out DIR`: tokenize, shard, resume
    import_shards.py   `python -m data.import_shards FOLDER --out DIR`: build-nanogpt's / llm.c's token shards
    out_folder.py      the output folder of prepare/import: lock, settings record, keep / resume / refuse / replace
    loader.py          TokenDataset (verify), TrainBatches (shuffled, rank-strided, resumable), val_batches
"""
