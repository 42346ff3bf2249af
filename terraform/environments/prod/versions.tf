terraform {
  required_version = ">= 1.9.0"

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = ">= 6.14.0, < 7.0.0"
    }
  }

  # State lives in a GCS bucket created once by hand (see docs/deploy.md):
  #   terraform init -backend-config="bucket=STATE_BUCKET" -backend-config="prefix=cloudagents/prod"
  backend "gcs" {}
}
