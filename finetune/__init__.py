"""Fine-tuning: datasets, LoRA, CPT, DPO and ReFT trainers, jobs, adapters, reranker training."""
