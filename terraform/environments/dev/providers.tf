provider "google" {
  project = var.project_id
  region  = var.region
  default_labels = {
    environment = "dev"
    managed-by  = "terraform"
  }
}
