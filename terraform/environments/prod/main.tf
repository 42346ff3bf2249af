# prod: still scales to zero when idle, but services and the database are protected, Firestore
# keeps point-in-time recovery, and the services may scale further.
module "cloudagents" {
  source = "../../modules/cloudagents"

  project_id           = var.project_id
  region               = var.region
  image                = var.image
  api_invokers         = var.api_invokers
  topology             = var.topology
  firestore_ttl_fields = var.firestore_ttl_fields
  firestore_location   = var.firestore_location

  deletion_protection              = true
  bucket_force_destroy             = false
  firestore_point_in_time_recovery = true
  service_defaults = {
    min_instances = 0
    max_instances = 20
  }
  service_settings = {
    # Model calls are slow and I/O bound: one executor instance serves many concurrently.
    run_executor = { max_instances = 50, memory = "1Gi" }
  }
  labels = {
    environment = "prod"
  }
}
