variable "project_id" {
  description = "Project that owns the service."
  type        = string
}

variable "region" {
  description = "Cloud Run region."
  type        = string
}

variable "name" {
  description = "Service name."
  type        = string
  validation {
    condition     = can(regex("^[a-z]([-a-z0-9]{0,47}[a-z0-9])?$", var.name))
    error_message = "Service names are up to 49 lowercase letters, digits and hyphens, starting with a letter."
  }
}

variable "description" {
  description = "What the service does."
  type        = string
  default     = null
}

variable "image" {
  description = "Container image used when the service is created (later rollouts: gcloud run deploy)."
  type        = string
  validation {
    condition     = length(trimspace(var.image)) > 0
    error_message = "image must not be empty."
  }
}

variable "service_account_email" {
  description = "Runtime identity of the service."
  type        = string
}

variable "ingress" {
  description = "INGRESS_TRAFFIC_ALL for the public api; INGRESS_TRAFFIC_INTERNAL_ONLY for push-only services (Pub/Sub and Cloud Tasks in the same project count as internal)."
  type        = string
  default     = "INGRESS_TRAFFIC_INTERNAL_ONLY"
  validation {
    condition = contains([
      "INGRESS_TRAFFIC_ALL", "INGRESS_TRAFFIC_INTERNAL_ONLY", "INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER"
    ], var.ingress)
    error_message = "ingress must be INGRESS_TRAFFIC_ALL, INGRESS_TRAFFIC_INTERNAL_ONLY or INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER."
  }
}

variable "scaling" {
  description = "Instance bounds. min_instances 0 scales to zero when idle."
  type = object({
    min_instances = optional(number, 0)
    max_instances = optional(number, 10)
  })
  default = {}
  validation {
    condition     = var.scaling.min_instances >= 0 && var.scaling.min_instances <= var.scaling.max_instances
    error_message = "Need 0 <= min_instances <= max_instances."
  }
}

variable "concurrency" {
  description = "Requests one instance serves at once."
  type        = number
  default     = 80
  validation {
    condition     = var.concurrency >= 1 && var.concurrency <= 1000
    error_message = "concurrency must be between 1 and 1000."
  }
}

variable "timeout_seconds" {
  description = "Request timeout. For a push service it must be at least its subscriptions' ack deadline."
  type        = number
  default     = 300
  validation {
    condition     = var.timeout_seconds >= 1 && var.timeout_seconds <= 3600
    error_message = "timeout_seconds must be between 1 and 3600."
  }
}

variable "resources" {
  description = "Container CPU and memory."
  type = object({
    cpu               = optional(string, "1")
    memory            = optional(string, "512Mi")
    cpu_idle          = optional(bool, true)
    startup_cpu_boost = optional(bool, true)
  })
  default = {}
}

variable "container_port" {
  description = "Port the container listens on (Cloud Run passes it as PORT)."
  type        = number
  default     = 8080
}

variable "env" {
  description = "Plain environment variables."
  type        = map(string)
  default     = {}
  validation {
    condition     = !contains(keys(var.env), "PORT")
    error_message = "PORT is set by Cloud Run."
  }
}

variable "secret_env" {
  description = "Environment variables read from Secret Manager: NAME => {secret, version}."
  type = map(object({
    secret  = string
    version = optional(string, "latest")
  }))
  default = {}
}

variable "invokers" {
  description = "Members granted roles/run.invoker on this service (authoritative)."
  type        = list(string)
  default     = []
  validation {
    condition = alltrue([
      for m in var.invokers : !contains(["allUsers", "allAuthenticatedUsers"], m)
    ])
    error_message = "allUsers and allAuthenticatedUsers may not invoke the service."
  }
  validation {
    condition = alltrue([
      for m in var.invokers : can(regex("^(user|group|serviceAccount|domain|principal|principalSet):", m))
    ])
    error_message = "Invokers must be IAM members such as user:EMAIL, group:EMAIL or serviceAccount:EMAIL."
  }
}

variable "labels" {
  description = "Labels on the service and its revisions."
  type        = map(string)
  default     = {}
}

variable "deletion_protection" {
  description = "Refuse terraform destroy of the service."
  type        = bool
  default     = true
}
