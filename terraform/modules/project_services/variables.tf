variable "project_id" {
  description = "Project to enable the APIs in."
  type        = string
  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.project_id))
    error_message = "project_id must be a GCP project id (6-30 lowercase letters, digits, hyphens)."
  }
}

variable "services" {
  description = "APIs to enable, e.g. run.googleapis.com."
  type        = list(string)
  default     = []
  validation {
    condition     = alltrue([for s in var.services : endswith(s, ".googleapis.com")])
    error_message = "Each service must be an API name ending in .googleapis.com."
  }
}
