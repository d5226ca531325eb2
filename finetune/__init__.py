"""Fine-tuning: datasets, LoRA and ReFT trainers, jobs, adapters (issue #6)."""
