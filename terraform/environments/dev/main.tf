# dev: scales to zero, nothing protected from terraform destroy.
module "cloudagents" {
  source = "../../modules/cloudagents"

  project_id           = var.project_id
  region               = var.region
  image                = var.image
  api_invokers         = var.api_invokers
  topology             = var.topology
  firestore_ttl_fields = var.firestore_ttl_fields
  firestore_location   = var.firestore_location

  deletion_protection              = false
  bucket_force_destroy             = true
  firestore_point_in_time_recovery = false
  service_defaults = {
    min_instances = 0
    max_instances = 3
  }
  labels = {
    environment = "dev"
  }
}
